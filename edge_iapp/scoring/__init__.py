"""Slide scoring: counts, karyotypes, karyograms and review flags (no torch).

Modules: ``layout`` (where slides, cells and outputs are), ``segment`` (whole images ->
objects, clusters), ``cell`` (one cell: read, classify, summarise, write), ``karyotype``
(counts, ISCN string, flags), ``consistency`` (karyotype-level re-assignment),
``karyogram`` (ISCN layout PNG), ``report`` (slide tables, HTML), ``score`` (the
resumable runner), ``from_karyograms`` (labelled crops from karyogram images).
See docs/SCORING.md.
"""
