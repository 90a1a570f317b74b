// The official TypeScript SDK against the emulator. Run by compat/run.py with the SDK
// installed in the working directory; prints one JSON verdict per operation.
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";

const require = createRequire(process.cwd() + "/package.json");
const sdk = require("@anthropic-ai/sdk");
const Anthropic = sdk.default ?? sdk.Anthropic;
const BASE = process.env.COMPAT_BASE_URL.replace(/\/$/, "");
const MODEL = process.env.COMPAT_MODEL || "claude-opus-5";
const KEY = process.env.ANTHROPIC_API_KEY || "sk-ant-emulator";
const USER = [{ role: "user", content: "What is the weather in Paris?" }];
const SCHEMA = { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false };
const PERSON = {
  type: "object",
  properties: { name: { type: "string" }, age: { type: "integer" } },
  required: ["name", "age"],
  additionalProperties: false,
};
const TOOL = { name: "get_weather", description: "Weather for a city.", input_schema: SCHEMA };

class NotApplicable extends Error {}
const plan = (...faults) => `${BASE}/x/${randomUUID().replace(/-/g, "")}/${faults.join(",")}`;
const client = (baseURL = BASE, maxRetries = 0) => new Anthropic({ apiKey: KEY, baseURL, maxRetries });
const expect = (ok, message) => {
  if (!ok) throw new Error(message);
};
async function raises(fn, ...words) {
  try {
    await fn();
  } catch (err) {
    const text = `${err?.constructor?.name} ${err}`.toLowerCase();
    if (!words.length || words.some((w) => text.includes(w.toLowerCase()))) return;
    throw new Error(`raised, but not as expected: ${text}`);
  }
  throw new Error("no error was raised");
}

async function check(op, fn) {
  let verdict;
  try {
    await fn();
    verdict = { op, result: "pass", why: "" };
  } catch (err) {
    const na = err instanceof NotApplicable;
    verdict = { op, result: na ? "n/a" : "fail", why: `${na ? "" : err?.constructor?.name + ": "}${err?.message ?? err}`.slice(0, 400) };
  }
  console.log(JSON.stringify(verdict));
  console.error(`[${op}] ${verdict.result} ${verdict.why}`);
}

await check("create", async () => {
  const m = await client().messages.create({ model: MODEL, max_tokens: 200, messages: USER });
  expect(m.stop_reason === "end_turn" && m.content[0].text, "bad message");
});
await check("stream", async () => {
  const s = client().messages.stream({ model: MODEL, max_tokens: 200, messages: USER });
  let text = "";
  s.on("text", (t) => (text += t));
  const final = await s.finalMessage();
  expect(text && final.content[0].text === text, "streamed text differs from the final message");
});
await check("tools", async () => {
  const c = client();
  const first = await c.messages.create({ model: MODEL, max_tokens: 300, messages: USER, tools: [TOOL] });
  const call = first.content.find((b) => b.type === "tool_use");
  expect(first.stop_reason === "tool_use" && call, "no tool call");
  const messages = [...USER, { role: "assistant", content: first.content }, {
    role: "user", content: [{ type: "tool_result", tool_use_id: call.id, content: "Sunny, 21 C" }],
  }];
  const second = await c.messages.create({ model: MODEL, max_tokens: 300, messages, tools: [TOOL] });
  expect(second.stop_reason === "end_turn", `second turn stopped with ${second.stop_reason}`);
});
await check("tool_runner", async () => {
  const c = client();
  if (typeof c.beta?.messages?.toolRunner !== "function") throw new NotApplicable("this SDK version has no beta.messages.toolRunner");
  let ran = 0;
  const tool = {
    type: "custom", name: "get_weather", description: "Weather for a city.", input_schema: SCHEMA,
    run: async () => { ran += 1; return "Sunny, 21 C"; },
    parse: (input) => input,
  };
  const final = await c.beta.messages.toolRunner({ model: MODEL, max_tokens: 300, messages: USER, tools: [tool] });
  expect(ran === 1 && final.stop_reason === "end_turn", `tool ran ${ran}x, stop ${final.stop_reason}`);
});
await check("structured", async () => {
  const m = await client().messages.create({
    model: MODEL, max_tokens: 300, messages: [{ role: "user", content: "Invent a person." }],
    output_config: { format: { type: "json_schema", schema: PERSON } },
  });
  const data = JSON.parse(m.content[0].text);
  expect(typeof data.name === "string" && Number.isInteger(data.age), `not the schema: ${m.content[0].text}`);
});
await check("count_tokens", async () => {
  const r = await client().messages.countTokens({ model: MODEL, messages: USER, tools: [TOOL] });
  expect(r.input_tokens > 0, "zero tokens");
});
await check("models", async () => {
  const ids = [];
  for await (const m of client().models.list()) ids.push(m.id);
  expect(ids.includes(MODEL), `${MODEL} not listed`);
  expect((await client().models.retrieve(MODEL)).id === MODEL, "retrieve gave another model");
});
await check("404", () => raises(() => client().messages.create({ model: "claude-nope-9", max_tokens: 50, messages: USER }), "NotFoundError"));
await check("529_retried", async () => {
  const m = await client(plan("overloaded"), 2).messages.create({ model: MODEL, max_tokens: 200, messages: USER });
  expect(m.stop_reason === "end_turn", "no answer after the retry");
});
await check("midstream_error", () => raises(async () => {
  const s = client(plan("error_event;after=2")).messages.stream({ model: MODEL, max_tokens: 200, messages: USER });
  await s.finalMessage();
}, "overloaded"));
