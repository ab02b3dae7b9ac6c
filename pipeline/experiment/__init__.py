"""What to run: scenario files (`scenarios`), experiment files (`config`) and their TOML reading
with file:line errors (`tomlfile`).

The first stage: it imports only the common modules (`pipeline.errors`, `logs`, `progress`);
every later stage may import it.
"""
