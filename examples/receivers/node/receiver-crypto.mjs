// An apixo-watcher webhook receiver with Node's own modules only (no packages).
//
//   APP_WEBHOOK_SECRET=whsec_... node examples/receivers/node/receiver-crypto.mjs
//
// Listens on 127.0.0.1:9000 (set HOST and PORT to change; PORT=0 picks a free port) and accepts
// POST on any path. verify() is the part to copy: Standard Webhooks v1 (HMAC-SHA256) checked by
// hand, the same check as receiver-standardwebhooks.mjs. docs/receivers.md explains each step.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const TOLERANCE_S = 5 * 60; // what Standard Webhooks libraries allow between two clocks
const MAX_BODY_BYTES = 1024 * 1024;
const SECRET = process.env.APP_WEBHOOK_SECRET; // "whsec_...", the endpoint's secret
if (!SECRET) {
  console.error("set APP_WEBHOOK_SECRET to the endpoint's whsec_... secret");
  process.exit(1);
}

export class InvalidWebhook extends Error {}

// The event, if `body` (a Buffer of the raw bytes, exactly as received) is signed with `secret`.
export function verify(secret, headers, body) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) {
    throw new InvalidWebhook("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  if (!/^\d+$/.test(timestamp)) {
    throw new InvalidWebhook("webhook-timestamp is not Unix seconds");
  }
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_S) {
    throw new InvalidWebhook("webhook-timestamp is too far from our clock (a replay?)");
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key)
    .update(`${id}.${timestamp}.`)
    .update(body)
    .digest();
  // One signature per secret the sender holds (during a rotation, several): any may match.
  for (const signature of signatures.split(" ")) {
    const [version, value] = signature.split(",");
    if (version !== "v1" || !value) continue;
    const given = Buffer.from(value, "base64");
    if (given.length === expected.length && timingSafeEqual(given, expected)) {
      return JSON.parse(body.toString("utf8"));
    }
  }
  throw new InvalidWebhook("no signature matches our secret");
}

// Webhooks arrive at least once: the same webhook-id may come again (a retry after a lost
// answer, a redeliver). Production code records it in its database, in the same transaction as
// the work, with a unique constraint; a Set shows the idea.
const seen = new Set();

// The slow part (download results, update orders, ...), after the answer has gone.
function processEvent(webhookId, event) {
  const data = event.data ?? {};
  const about = "task_id" in data ? ` (task ${data.task_id})` : "";
  console.log(`accepted ${event.type} ${webhookId}${about}`);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new InvalidWebhook("body too large"));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

const server = createServer(async (req, res) => {
  if (req.method !== "POST") {
    res.writeHead(405).end();
    return;
  }
  let event;
  try {
    const body = await readBody(req); // the raw bytes: never re-serialize before verifying
    event = verify(SECRET, req.headers, body);
  } catch (error) {
    console.log(`rejected: ${error.message}`);
    res.writeHead(400).end();
    return;
  }
  const webhookId = req.headers["webhook-id"];
  if (seen.has(webhookId)) {
    console.log(`duplicate ${webhookId} (already accepted)`);
  } else {
    seen.add(webhookId);
    setImmediate(() => processEvent(webhookId, event)); // answer now, work later
  }
  res.writeHead(204).end();
});

server.listen(Number(process.env.PORT ?? 9000), process.env.HOST ?? "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
