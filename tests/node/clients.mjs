// The official `openai` Node SDK, used as any client would, against a running gateway.
// Usage: VAULT_URL=http://127.0.0.1:8000 VAULT_KEY=vault_sk_... node clients.mjs
// Exits non-zero, naming the failed check, when the SDK and the gateway disagree.
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const { VAULT_URL, VAULT_KEY } = process.env;
if (!VAULT_URL || !VAULT_KEY) {
  console.error('set VAULT_URL (the gateway, without /v1) and VAULT_KEY');
  process.exit(2);
}

const MODEL = 'qwen2.5-32b-awq';
const MESSAGES = [{ role: 'user', content: 'Summarise the patient note please' }];
// No retries: a failure must show at once, not after the SDK's back-off.
const client = new OpenAI({ baseURL: `${VAULT_URL}/v1`, apiKey: VAULT_KEY, maxRetries: 0, timeout: 20_000 });

const checks = {
  async 'chat completion'() {
    const answer = await client.chat.completions.create({ model: MODEL, messages: MESSAGES });
    assert.match(answer.choices[0].message.content, /^This is a reply from fake-vllm/);
    assert.equal(answer.choices[0].finish_reason, 'stop');
    assert.ok(answer.usage.completion_tokens > 0, 'usage is reported');
  },

  async 'streamed chat completion'() {
    const stream = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
    let text = '';
    let finish = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.match(text, /^This is a reply from fake-vllm to: Summarise/);
    assert.equal(finish, 'stop', 'the stream ends with a finish reason');
  },

  async embeddings() {
    // The SDK asks for base64 unless told otherwise and decodes it itself.
    const answer = await client.embeddings.create({ model: MODEL, input: ['one two', 'three'], dimensions: 8 });
    assert.equal(answer.data.length, 2);
    assert.equal(answer.data[1].embedding.length, 8);
    assert.ok(answer.data[1].embedding.every(Number.isFinite), 'embeddings decode to numbers');
  },

  async 'models list and retrieve'() {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids, ['qwen2.5-32b-awq', 'Qwen/Qwen2.5-7B-Instruct']);
    // The SDK percent-encodes the `/` of the id.
    const model = await client.models.retrieve('Qwen/Qwen2.5-7B-Instruct');
    assert.equal(model.id, 'Qwen/Qwen2.5-7B-Instruct');
  },

  async 'bad key is an AuthenticationError'() {
    const bad = new OpenAI({ baseURL: `${VAULT_URL}/v1`, apiKey: 'vault_sk_' + 'x'.repeat(48), maxRetries: 0 });
    await assert.rejects(bad.models.list(), (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `expected AuthenticationError, got ${err?.constructor?.name}`);
      assert.equal(err.status, 401);
      assert.equal(err.type, 'authentication_error');
      assert.equal(err.code, 'invalid_api_key');
      return true;
    });
  },

  async 'unknown model is a NotFoundError naming the param'() {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4', messages: MESSAGES }), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `expected NotFoundError, got ${err?.constructor?.name}`);
      assert.equal(err.status, 404);
      assert.equal(err.type, 'not_found_error');
      assert.equal(err.param, 'model');
      return true;
    });
  },
};

let failed = 0;
for (const [name, check] of Object.entries(checks)) {
  try {
    await check();
    console.log(`ok   ${name}`);
  } catch (err) {
    failed += 1;
    console.error(`FAIL ${name}: ${err?.stack ?? err}`);
  }
}
console.log(`openai ${VERSION} on node ${process.version}: ${failed ? `${failed} failed` : 'all passed'}`);
process.exit(failed ? 1 : 0);
