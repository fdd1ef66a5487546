"""``cola bench``: every way to spend depth per input, on one model and one task, each beside its chance control, in
one resumable command (:mod:`.plan`: the splits and stages; :mod:`.run`: each stage a library job; :mod:`.page`: the
verdict table, the Pareto figure and the page)."""
