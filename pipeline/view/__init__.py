"""`pipeline view`: a local web app over the results database, to read runs, cells and
transcripts and to label responses (`server` wires the routes, `reads` asks the database,
`pages` renders HTML through `html`, which escapes every piece of text; `static/` holds the
one small script and the style sheet).

Reads open the database only for the length of a request, so a viewer left open never
blocks a run; a database held by a run shows "updating" and is retried. Labels go through
grading's `LabelWriter` (journal first), exactly as `pipeline label` writes them.
May import the common modules, `experiment`, `store`, `grading` and `report`; never the CLI.
"""
