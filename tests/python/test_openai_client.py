"""The official `openai` package, used as any client would, against the running gateway."""

import json
import urllib.request

import openai
import pytest

MODEL = "qwen2.5-32b-awq"
MESSAGES = [{"role": "user", "content": "Summarise the patient note please"}]


def test_chat_completion(client):
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert answer.choices[0].message.content.startswith("This is a reply from fake-vllm")
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 6 and answer.usage.completion_tokens == 12


def test_streamed_chat_completion_hides_the_usage_chunk_it_did_not_ask_for(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("This is a reply from fake-vllm to: Summarise")
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streamed_chat_completion_with_usage_when_asked(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 12


def test_completion(client):
    answer = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4)
    assert answer.choices[0].text == "This is a reply"
    assert answer.choices[0].finish_reason == "length"


def test_embeddings_default_and_float(client):
    # The client asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model=MODEL, input=["one two", "three"], dimensions=8)
    floats = client.embeddings.create(model=MODEL, input=["one two", "three"], dimensions=8, encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 8
    assert default.data[1].embedding == pytest.approx(floats.data[1].embedding, abs=1e-6)
    assert default.usage.prompt_tokens == 3


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["qwen2.5-32b-awq", "Qwen/Qwen2.5-7B-Instruct"]
    assert client.models.retrieve("Qwen/Qwen2.5-7B-Instruct").id == "Qwen/Qwen2.5-7B-Instruct"


def test_engine_fields_pass_through(client, stack):
    client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_body={"top_k": 5, "chat_template_kwargs": {"enable_thinking": False}}
    )
    with urllib.request.urlopen(stack.fake_url + "/_fake/requests") as response:
        last = json.load(response)[-1]
    assert last["top_k"] == 5
    assert last["chat_template_kwargs"] == {"enable_thinking": False}


def test_bad_key_raises_authentication_error(stack):
    bad = openai.OpenAI(base_url=stack.url + "/v1", api_key="vault_sk_" + "x" * 48, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    # OpenAI's own fields, which the SDKs expose.
    assert caught.value.type == "authentication_error"


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert "gpt-4" in caught.value.message
    assert (caught.value.type, caught.value.param) == ("not_found_error", "model")


@pytest.mark.parametrize("mode", ["stream_error:2", "cut:2"])
def test_upstream_failure_mid_stream_raises_api_error(client, mode):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_body={"fake_mode": mode})
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 2, "the chunks before the failure arrive"


def test_curl_trusts_the_certificate_the_wizard_made(https_url):
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    url, ca = https_url
    for flags in (["--http1.1"], ["--http2"]):
        answer = subprocess.run(
            [curl, "-sS", "--cacert", ca, *flags, "-w", "\n%{http_code} %{http_version}", url + "/vault/health"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert answer.returncode == 0, answer.stderr
        body, status = answer.stdout.rsplit("\n", 1)
        assert json.loads(body)["version"]
        assert status == ("200 2" if flags == ["--http2"] else "200 1.1")
