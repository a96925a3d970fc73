// The official OpenAI Node client against a real `chatglm serve` process.
// cmd/chatglm/serve_test.go starts the server on a tiny random ChatGLM3
// model and runs `node --test` here with:
//   CHATGLM_BASE_URL  e.g. http://127.0.0.1:41234/v1
//   CHATGLM_API_KEY   the key the server was started with
//   CHATGLM_MODEL     the served model id
// A random model writes random text, so these tests check what the client
// sees (shapes, finish reasons, usage, errors), not what the text says.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.CHATGLM_BASE_URL;
const apiKey = process.env.CHATGLM_API_KEY;
const model = process.env.CHATGLM_MODEL;
if (!baseURL || !apiKey || !model) {
  throw new Error('set CHATGLM_BASE_URL, CHATGLM_API_KEY and CHATGLM_MODEL (see cmd/chatglm/serve_test.go)');
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather of a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', description: 'city name' } },
      required: ['city'],
    },
  },
}];

function checkUsage(usage) {
  assert.ok(usage, 'usage is present');
  assert.ok(usage.prompt_tokens > 0, 'prompt tokens counted');
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
}

test('models.list names the served model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [model]);
});

test('non-streaming chat completion', async () => {
  const r = await client.chat.completions.create({
    model,
    messages: [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: '你好' },
    ],
    temperature: 0,
    max_tokens: 12,
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, model);
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason), c.finish_reason);
  checkUsage(r.usage);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12);
  if (c.finish_reason === 'length') assert.equal(r.usage.completion_tokens, 12);
});

test('streaming chat completion matches the non-streamed reply', async () => {
  const params = {
    model,
    messages: [{ role: 'user', content: 'Tell me a story.' }],
    temperature: 0,
    max_tokens: 16,
  };
  const whole = await client.chat.completions.create(params);
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let content = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      if (ch.delta?.content) content += ch.delta.content;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.ok(chunks >= 2, `got ${chunks} chunks`);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.equal(content, whole.choices[0].message.content);
  checkUsage(usage);
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
  assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);
});

test('the stream helper accumulates a final message', async () => {
  const runner = client.chat.completions.stream({
    model,
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 8,
    seed: 42,
  });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.role, 'assistant');
  assert.equal(typeof final.choices[0].message.content, 'string');
});

test('tools: a conversation with a tool call and its result', async () => {
  const r = await client.chat.completions.create({
    model,
    tools,
    tool_choice: 'auto',
    temperature: 0,
    max_tokens: 16,
    messages: [
      { role: 'user', content: 'What is the weather in Beijing?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Beijing"}' } }],
      },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temperature": 22, "sky": "sunny"}' },
    ],
  });
  const c = r.choices[0];
  assert.ok(['stop', 'length', 'tool_calls'].includes(c.finish_reason), c.finish_reason);
  assert.equal(c.message.role, 'assistant');
  if (c.finish_reason === 'tool_calls') {
    for (const call of c.message.tool_calls) {
      assert.equal(call.type, 'function');
      assert.equal(call.function.name, 'get_weather');
      JSON.parse(call.function.arguments);
    }
  } else {
    assert.equal(typeof c.message.content, 'string');
  }
  checkUsage(r.usage);

  // The same tools, named in tool_choice, over a stream.
  const stream = await client.chat.completions.create({
    model, tools, stream: true, max_tokens: 16,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
  });
  let finish = null;
  for await (const chunk of stream) {
    for (const ch of chunk.choices) if (ch.finish_reason) finish = ch.finish_reason;
  }
  assert.ok(['stop', 'length', 'tool_calls'].includes(finish), finish);
});

test('raw completion', async () => {
  const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  checkUsage(r.usage);
});

test('errors arrive as the client\'s typed errors', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    (err) => err instanceof OpenAI.NotFoundError && err.status === 404 && err.code === 'model_not_found',
  );
  await assert.rejects(
    client.chat.completions.create({ model, n: 2, messages: [{ role: 'user', content: 'hi' }] }),
    (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && err.param === 'n',
  );
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: 'user', content: 'word '.repeat(5000) }] }),
    (err) => err instanceof OpenAI.BadRequestError && err.code === 'context_length_exceeded',
  );
  const wrongKey = new OpenAI({ baseURL, apiKey: 'not-the-key', maxRetries: 0 });
  await assert.rejects(
    wrongKey.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] }),
    (err) => err instanceof OpenAI.AuthenticationError && err.status === 401,
  );
});

test('an aborted stream leaves the server serving', async () => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model, stream: true, max_tokens: 200, messages: [{ role: 'user', content: 'Go on and on.' }] },
    { signal: controller.signal },
  );
  let chunks = 0;
  try {
    for await (const chunk of stream) {
      chunks++;
      if (chunk.choices[0]?.delta?.content !== undefined) controller.abort();
    }
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIUserAbortError || err.name === 'AbortError', String(err));
  }
  assert.ok(controller.signal.aborted);
  assert.ok(chunks >= 1 && chunks < 200, `read ${chunks} chunks`);
  // With the aborted generation stopped, both sequences serve again.
  const replies = await Promise.all([1, 2].map(() =>
    client.chat.completions.create({ model, max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] })));
  for (const r of replies) assert.equal(r.choices.length, 1);
});
