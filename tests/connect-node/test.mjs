// vault.v1 through the official Connect clients for Node (@connectrpc/connect-node), a client
// nobody here wrote, over its three transports: the Connect protocol (HTTP/1.1, JSON and
// binary), gRPC-Web (HTTP/1.1) and gRPC (HTTP/2). No generated code: the services come from
// the same descriptor set the Rust code is generated from (proto/src/gen/vault.v1.bin), read
// by @bufbuild/protobuf's registry. The same cases as the Rust client's round trip and error
// tests: every Tokenizer rpc, Admin rpcs, and the codes of refusals.
//
//   VAULT_ADDR=127.0.0.1:50051 VAULT_API_KEY_FILE=vault-data/dev-api-key node --test test.mjs
//
// tests/connect-node/run.sh starts the daemon and runs this.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

const here = path.dirname(fileURLToPath(import.meta.url));
const fds = fromBinary(
  FileDescriptorSetSchema,
  readFileSync(path.join(here, "../../proto/src/gen/vault.v1.bin")),
);
const registry = createFileRegistry(fds);
const Tokenizer = registry.getService("vault.v1.Tokenizer");
const Admin = registry.getService("vault.v1.Admin");

const baseUrl = `http://${process.env.VAULT_ADDR ?? "127.0.0.1:50051"}`;
const key = readFileSync(process.env.VAULT_API_KEY_FILE, "utf8").trim();
const auth = { headers: { authorization: `Bearer ${key}` } };
const PAN = "4111111111111111";

const transports = {
  "connect+json": createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  "connect+proto": createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
  "connect+json over HTTP/2": createConnectTransport({ baseUrl, httpVersion: "2" }),
  "grpc-web": createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  grpc: createGrpcTransport({ baseUrl }),
};

for (const [name, transport] of Object.entries(transports)) {
  const tokenizer = createClient(Tokenizer, transport);
  const admin = createClient(Admin, transport);

  test(`${name}: tokenize, detokenize, reveal, delete`, async () => {
    const t = await tokenizer.tokenize({ template: "pan_vault", items: [{ value: PAN }] }, auth);
    assert.match(t.requestId, /^req_/);
    assert.equal(t.results[0].outcome.case, "token");
    const token = t.results[0].outcome.value.token;
    assert.match(token, /^tok_/);

    const d = await tokenizer.detokenize(
      { template: "pan_vault", purpose: "connect-node test", items: [{ token }] },
      auth,
    );
    assert.equal(d.results[0].outcome.case, "value");
    assert.equal(d.results[0].outcome.value.value, PAN);

    const r = await tokenizer.reveal(
      { template: "pan_vault", purpose: "connect-node test", items: [{ token }] },
      auth,
    );
    assert.equal(r.results[0].outcome.case, "value");
    assert.ok(r.results[0].outcome.value.maskedValue.endsWith("1111"));
    assert.notEqual(r.results[0].outcome.value.maskedValue, PAN);

    const del = await tokenizer.deleteTokens({ template: "pan_vault", items: [{ token }] }, auth);
    assert.equal(del.results[0].outcome.case, "deleted");
  });

  test(`${name}: FPE keeps the format`, async () => {
    const t = await tokenizer.tokenize({ template: "pan", items: [{ value: PAN }] }, auth);
    const token = t.results[0].outcome.value.token;
    assert.equal(token.length, 16);
    assert.ok(token.endsWith("1111"));
    assert.notEqual(token, PAN);
  });

  test(`${name}: admin rpcs`, async () => {
    const seal = await admin.getSealStatus({}, auth);
    assert.equal(seal.sealed, false);
    const keys = await admin.getKeyStatus({}, auth);
    assert.ok(keys.keys.length > 0);
    const verify = await admin.verifyAuditLog({}, auth);
    assert.equal(verify.ok, true);
  });

  test(`${name}: refusals carry their codes`, async () => {
    const refused = async (call, code) => {
      await assert.rejects(call, (e) => {
        assert.ok(e instanceof ConnectError, String(e));
        assert.equal(e.code, code, e.message);
        assert.ok(!e.rawMessage.includes("4929730917531859"), e.rawMessage);
        return true;
      });
    };
    await refused(
      tokenizer.tokenize({ template: "pan_vault", items: [{ value: PAN }] }),
      Code.Unauthenticated,
    );
    await refused(
      tokenizer.tokenize(
        { template: "pan_vault", items: [{ value: PAN }] },
        { headers: { authorization: "Bearer vk_not_a_key" } },
      ),
      Code.Unauthenticated,
    );
    await refused(
      tokenizer.tokenize({ template: "4929730917531859", items: [{ value: PAN }] }, auth),
      Code.NotFound,
    );
    await refused(tokenizer.tokenize({ template: "pan_vault", items: [] }, auth), Code.InvalidArgument);
    await refused(
      tokenizer.detokenize({ template: "pan_vault", items: [{ token: "tok_x" }] }, auth),
      Code.InvalidArgument,
    );
  });

  test(`${name}: a deadline that has passed is DEADLINE_EXCEEDED`, async () => {
    await assert.rejects(
      tokenizer.tokenize(
        { template: "pan_vault", items: [{ value: PAN }] },
        { ...auth, timeoutMs: 1 },
      ),
      (e) => e instanceof ConnectError && e.code === Code.DeadlineExceeded,
    );
  });
}
