"""The embedded model: a llama.cpp server (xllamacpp) in a child process the pipeline owns,
and the model file it serves (`server`).

Imports only the common modules (`pipeline.errors`, `logs`, `progress`); imported only by
`sampling` (which starts it for an `embedded = true` model) and the CLI (`pipeline serve`).
"""
