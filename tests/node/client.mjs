// A JavaScript client of the /1 JSON API, as a browser or Node.js application wrote one: it lists the
// inbox, keeps each message's id as id_str (a JSON number past 2^53 loses its last digits in JavaScript),
// and destroys the first message by that id. Node's built-in fetch only; no packages.
//
// Usage: node client.mjs BASE_URL   (e.g. http://127.0.0.1:8080/1)
// Prints one JSON line: what it saw and did; exits 1, saying why on stderr, when the API answers wrongly.

const base = process.argv[2];
if (!base) {
  console.error("usage: node client.mjs BASE_URL");
  process.exit(2);
}

async function call(method, path) {
  const response = await fetch(`${base}${path}`, { method });
  const text = await response.text();
  if (response.status !== 200) {
    throw new Error(`${method} ${path}: HTTP ${response.status}: ${text}`);
  }
  if (!response.headers.get("content-type").startsWith("application/json")) {
    throw new Error(`${method} ${path}: not JSON: ${response.headers.get("content-type")}`);
  }
  return { text, body: JSON.parse(text) };
}

function check(condition, what) {
  if (!condition) {
    throw new Error(what);
  }
}

try {
  const inbox = await call("GET", "/direct_messages.json");
  check(Array.isArray(inbox.body) && inbox.body.length > 0, "the inbox is not a non-empty array");
  const messages = inbox.body.map((message) => {
    for (const key of ["id_str", "sender_id_str", "recipient_id_str"]) {
      check(typeof message[key] === "string" && /^[0-9]+$/.test(message[key]), `${key} is not a string of digits`);
    }
    check(typeof message.sender.id_str === "string", "the sender has no id_str");
    return {
      id_str: message.id_str,
      // What a client that trusted the number would have named: exact only below 2^53.
      id_as_number: String(message.id),
      sender_id_str: message.sender_id_str,
      recipient_id_str: message.recipient_id_str,
      sender_user_id_str: message.sender.id_str,
    };
  });
  const target = messages[0].id_str;
  const destroyed = await call("POST", `/direct_messages/destroy/${target}.json`);
  check(destroyed.body.id_str === target, `destroy answered ${destroyed.body.id_str}, not ${target}`);
  console.log(JSON.stringify({ listed: messages, destroyed: destroyed.body.id_str }));
} catch (error) {
  console.error(String(error && error.message ? error.message : error));
  process.exit(1);
}
