"""RAG frameworks over `unite serve`: LangChain's OpenAIEmbeddings and LlamaIndex's OpenAI-compatible embedding
class, the real client packages against a real server on 127.0.0.1, offline (no tokenizer downloads)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("lancedb")
langchain_openai = pytest.importorskip("langchain_openai")
openai_like = pytest.importorskip("llama_index.embeddings.openai_like")
openai = pytest.importorskip("openai")

from serving import Server, build_test_index  # noqa: E402

KEY = "rag-s3cret"
TEXTS = ["a red circle on a white page", "stormy clouds over the open sea", "a cat asleep on a sofa"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, media_dir, encoder, legacy_checkpoint):
    folder = tmp_path_factory.mktemp("rag")
    index = build_test_index(folder, media_dir, encoder, legacy_checkpoint)
    running = Server(index, folder / "server.log", "--api-key-env", "RAG_TEST_KEY", env={"RAG_TEST_KEY": KEY})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def expected(encoder):
    return encoder.encode(TEXTS, show_progress_bar=False)


def assert_same(vectors, expected) -> None:
    vectors = np.asarray(vectors, dtype=np.float32)
    assert vectors.shape == expected.shape
    assert np.allclose((vectors * expected).sum(axis=1), 1.0, atol=1e-5)


def test_langchain_openai_embeddings_with_the_documented_setting(server, expected):
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="unite", base_url=server.url + "/v1", api_key=KEY, check_embedding_ctx_length=False
    )
    assert_same(embeddings.embed_documents(TEXTS), expected)
    assert_same([embeddings.embed_query(TEXTS[1])], expected[1:2])


def test_langchain_local_tokenizer_chunking_also_works(server, expected, legacy_checkpoint):
    """`tiktoken_enabled=False` chunks texts with a Hugging Face tokenizer (here the checkpoint's own, local) and
    sends the chunks as text: short texts arrive whole."""
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="unite",
        base_url=server.url + "/v1",
        api_key=KEY,
        tiktoken_enabled=False,
        tiktoken_model_name=str(legacy_checkpoint),
    )
    assert_same(embeddings.embed_documents(TEXTS), expected)


class FakeTiktoken:
    """What tiktoken's encoding does for LangChain's default path (token ids), without downloading its files."""

    def encode_ordinary(self, text: str) -> list[int]:
        return [ord(char) for char in text]

    def encode(self, text: str, **_: object) -> list[int]:
        return self.encode_ordinary(text)


def test_langchain_default_gets_an_error_naming_the_setting(server, monkeypatch):
    """LangChain's default sends token-id arrays; the server's 400 says exactly which setting to pass."""
    tiktoken = langchain_openai.embeddings.base.tiktoken
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda name: FakeTiktoken())
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: FakeTiktoken())
    embeddings = langchain_openai.OpenAIEmbeddings(model="unite", base_url=server.url + "/v1", api_key=KEY)
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        embeddings.embed_documents(TEXTS)


def test_llamaindex_openai_like_embedding(server, expected):
    model = openai_like.OpenAILikeEmbedding(model_name="unite", api_base=server.url + "/v1", api_key=KEY)
    assert_same(model.get_text_embedding_batch(TEXTS), expected)
    assert_same([model.get_query_embedding(TEXTS[0])], expected[:1])
    assert_same([model.get_text_embedding(TEXTS[2])], expected[2:])


def test_a_wrong_key_is_an_authentication_error(server):
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="unite", base_url=server.url + "/v1", api_key="wrong", check_embedding_ctx_length=False, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        embeddings.embed_query("x")
