"""Bridges to other libraries, one module each, imported only when used (this package imports none of them).

- :mod:`unite.integrations.sentence_transformers`: UNITE as a sentence-transformers module, and the export of a
  checkpoint to a folder ``SentenceTransformer`` loads (``sentence_transformers_entry.py`` is that folder's shim).
- :mod:`unite.integrations.mteb`: a :class:`~unite.UniteEncoder` as an mteb (>= 2) model
  (``pip install 'unite-embed[mteb]'``).
"""
