"""The study's tables from search records (analysis) and their pages: Markdown, HTML, figures, CSV."""
