"""An unmodified agent's LLM call: the official `openai` SDK, pointed at a provider URL,
trusting whatever `SSL_CERT_FILE` names (the mesh CA, as the injector sets it).

Prints one JSON line: the reply and its token usage, or the error the SDK raised and its
cause (a failed certificate verification, for instance). Exits 0 either way: the test
decides what is expected.

Usage: llm_client.py BASE_URL   (for example https://llm/v1)
"""

import json
import sys

import openai


def main():
    client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-e2e", max_retries=0, timeout=15)
    try:
        resp = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello through the sidecar"}],
        )
    except openai.APIError as e:
        cause = e.__cause__ or e.__context__
        print(json.dumps({"error": type(e).__name__, "cause": repr(cause)}))
        return
    print(
        json.dumps(
            {
                "content": resp.choices[0].message.content,
                "total_tokens": resp.usage.total_tokens if resp.usage else None,
            }
        )
    )


main()
