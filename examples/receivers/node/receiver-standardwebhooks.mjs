// An apixo-watcher webhook receiver with the `standardwebhooks` npm package.
//
//   npm ci    # in examples/receivers/node (make test does it when node and npm are installed)
//   APP_WEBHOOK_SECRET=whsec_... node examples/receivers/node/receiver-standardwebhooks.mjs
//
// Listens on 127.0.0.1:9000 (set HOST and PORT to change; PORT=0 picks a free port) and accepts
// POST on any path. The library checks the signature (any of them, during a rotation) and the
// timestamp (5 minutes either way); the rest is the same as receiver-crypto.mjs: the raw body,
// idempotency by webhook-id, answer first and work later. docs/receivers.md explains each step.
import { createServer } from "node:http";
import { Webhook } from "standardwebhooks";

const MAX_BODY_BYTES = 1024 * 1024;

if (!process.env.APP_WEBHOOK_SECRET) {
  console.error("set APP_WEBHOOK_SECRET to the endpoint's whsec_... secret");
  process.exit(1);
}
const webhook = new Webhook(process.env.APP_WEBHOOK_SECRET); // "whsec_..."

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
        reject(new Error("body too large"));
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
    // The raw body, as a string of its UTF-8 bytes: never JSON.stringify(JSON.parse(...)).
    const body = (await readBody(req)).toString("utf8");
    event = webhook.verify(body, req.headers); // throws unless signed and recent
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
