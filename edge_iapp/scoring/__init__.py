"""Slide scoring: counts, karyotypes, karyograms and review flags (no torch).

Modules: ``layout`` (where slides, cells and outputs are), ``segment`` (whole images ->
objects, clusters), ``cell`` (one cell: read, classify, summarise, write), ``karyotype``
(counts, ISCN string, flags), ``consistency`` (karyotype-level re-assignment),
``karyogram`` (ISCN layout PNG), ``report`` (slide tables, HTML), ``score`` (the
resumable runner), ``from_karyograms`` (labelled crops from karyogram images).
See docs/SCORING.md.
"""

THRESHOLD = 0.9
"""Consistency step default: calls at least this confident are never changed
(``score --threshold``; :mod:`.consistency`). Here, not there, so that the CLI can show
it without importing NumPy."""
PENALTY = 2.0
"""Consistency step default: extra cost of a copy beyond the normal number (``score
--penalty``)."""
