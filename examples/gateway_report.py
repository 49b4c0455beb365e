"""Start a Vault gateway with the built-in fake upstream, use it with the official openai
client, then summarise its audit log. Runs unattended:

    python examples/gateway_report.py
"""

from __future__ import annotations

import tempfile
from collections import Counter

import openai

import vault


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        v = vault.Vault.open(data_dir=data_dir)
        user = v.users.create("Example User", "example@clinic.example")
        key: str = v.keys.create("example script", scope="user", user_id=user["id"])["key"]

        with vault.Gateway(data_dir=data_dir) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
            for question in ["What is Vault?", "Who runs the models?"]:
                answer = client.chat.completions.create(
                    model="qwen2.5-32b-awq", messages=[{"role": "user", "content": question}]
                )
                print(f"Q: {question}\nA: {answer.choices[0].message.content}")
            stream = client.chat.completions.create(
                model="qwen2.5-32b-awq", messages=[{"role": "user", "content": "Stream please"}], stream=True
            )
            print("streamed:", "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
            client.embeddings.create(model="qwen2.5-32b-awq", input=["notes", "letters"])

        rows = v.audit.query(user_id=user["id"])
        by_path = Counter(str(row["path"]) for row in rows)
        tokens_in = sum(int(row["tokens_input"] or 0) for row in rows)
        tokens_out = sum(int(row["tokens_output"] or 0) for row in rows)
        print(f"\naudit: {len(rows)} requests by {user['name']}, {tokens_in} tokens in, {tokens_out} out")
        for path, count in sorted(by_path.items()):
            print(f"  {count:3d}  {path}")
        assert len(rows) == 4, rows


if __name__ == "__main__":
    main()
