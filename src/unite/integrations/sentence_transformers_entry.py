"""The custom module of a UNITE folder exported for sentence-transformers (``unite_sentence_transformers.py``).

``unite export sentence-transformers`` copies this file into the folder, and its ``modules.json`` names
``unite_sentence_transformers.UniteModule``; ``SentenceTransformer(folder, trust_remote_code=True)`` imports it.
The code lives in the unite-embed package (``unite.integrations.sentence_transformers``), so a fix there reaches
every exported folder. The class is redefined here so that sentence-transformers' ``save`` copies this file along.
"""

try:
    from unite.integrations.sentence_transformers import UniteModule as _UniteModule
except ModuleNotFoundError as error:
    if not (error.name or "").startswith("unite"):
        raise
    raise ImportError(
        "this UNITE checkpoint runs unite's own prompts, pixel pipeline and 1-D positions; it needs the "
        "unite-embed package (a version with unite.integrations): pip install -U 'unite-embed[st]'"
    ) from error


class UniteModule(_UniteModule):
    """UNITE's embedder as a sentence-transformers module; see ``unite.integrations.sentence_transformers``."""
