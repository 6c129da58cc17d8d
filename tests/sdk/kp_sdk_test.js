// The official Key Protect Node.js SDK, unchanged, against a kyok instance: token service,
// keys, wrap/unwrap/rewrap, rotation, disable/enable, dual-authorization delete, restore,
// policies, key aliases, key rings, import tokens and secure import, registrations, sync. Run by tests/integration/t_sdk.sh; everything comes from the environment:
//   KYOK_URL            a unit's base URL (also the token service: <url>/identity/token)
//   KYOK_URL_2          optional: another unit of the same instance (cross-unit checks)
//   KYOK_INSTANCE_ID    the service instance id (header Bluemix-Instance)
//   KYOK_APIKEY_MANAGER an API key with role Manager
//   KYOK_APIKEY_WRITER  an API key with role Writer (the other user of dual authorization)
//   KYOK_APIKEY_READER  an API key with role Reader
// Prints one line per check and "N passed, N failed" at the end; exits 1 on any failure.
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const KeyProtectV2 = require('@ibm-cloud/ibm-key-protect/ibm-key-protect-api/v2');
const { IamAuthenticator } = require('@ibm-cloud/ibm-key-protect/auth');

const env = (name, required = true) => {
  const v = process.env[name];
  if (required && !v) {
    console.error(`error: environment variable ${name} is not set`);
    process.exit(2);
  }
  return v;
};

const url = env('KYOK_URL');
const url2 = env('KYOK_URL_2', false);
const instance = env('KYOK_INSTANCE_ID');

function client(apikey, serviceUrl = url) {
  return new KeyProtectV2({
    authenticator: new IamAuthenticator({ apikey, url: serviceUrl }),
    serviceUrl,
  });
}

const manager = client(env('KYOK_APIKEY_MANAGER'));
const writer = client(env('KYOK_APIKEY_WRITER'));
const reader = client(env('KYOK_APIKEY_READER'));
const manager2 = url2 ? client(env('KYOK_APIKEY_MANAGER'), url2) : null;

let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   sdk: ${name}`);
  } catch (e) {
    failed++;
    const body = e && e.body ? ` ${e.body}` : '';
    console.log(`FAIL sdk: ${name}: ${e && e.message ? e.message : e}${body}`);
  }
}

// Resolves to the SDK's error when the call fails as expected, else throws.
async function refused(promise, status) {
  try {
    await promise;
  } catch (e) {
    assert.strictEqual(e.status, status, `status ${e.status}, want ${status}: ${e.body}`);
    return e;
  }
  throw new Error(`succeeded, want HTTP ${status}`);
}

const keyBody = (fields) => ({
  metadata: { collectionType: 'application/vnd.ibm.kms.key+json', collectionTotal: 1 },
  resources: [{ type: 'application/vnd.ibm.kms.key+json', ...fields }],
});

const b64 = (s) => Buffer.from(s).toString('base64');

// Key aliases: created, used in place of the id, deleted, and their refusals.
async function aliasChecks(p) {
  const alias = `sdk-alias-${process.pid}`;
  let keyId;

  await check('key aliases: create an alias', async () => {
    const k = await writer.createKey({ ...p, body: keyBody({ name: 'sdk-aliased' }) });
    keyId = k.result.resources[0].id;
    const r = await writer.createKeyAlias({ ...p, id: keyId, alias });
    assert.strictEqual(r.status, 201);
    assert.strictEqual(r.result.resources[0].keyId, keyId);
    assert.strictEqual(r.result.resources[0].alias, alias);
  });

  await check('key aliases: get and wrap by alias', async () => {
    const r = await reader.getKey({ ...p, id: alias });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.result.resources[0].id, keyId);
    assert.deepStrictEqual(r.result.resources[0].aliases, [alias]);
    const w = await reader.wrapKey({ ...p, id: alias, keyActionWrapBody: {} });
    const u = await reader.unwrapKey({
      ...p,
      id: keyId,
      keyActionUnwrapBody: { ciphertext: w.result.ciphertext },
    });
    assert.strictEqual(u.result.plaintext, w.result.plaintext);
  });

  await check('key aliases: in use (409), 6th (400), a reader (403)', async () => {
    const other = await writer.createKey({ ...p, body: keyBody({ name: 'sdk-aliased-2' }) });
    const e = await refused(
      writer.createKeyAlias({ ...p, id: other.result.resources[0].id, alias }),
      409
    );
    assert.ok(String(e.body).includes('KEY_ALIAS_NOT_UNIQUE_ERR'), e.body);
    for (let i = 2; i <= 5; i++) await writer.createKeyAlias({ ...p, id: keyId, alias: `${alias}-${i}` });
    await refused(writer.createKeyAlias({ ...p, id: keyId, alias: `${alias}-6` }), 400);
    await refused(reader.createKeyAlias({ ...p, id: keyId, alias: `${alias}-r` }), 403);
  });

  await check('key aliases: delete', async () => {
    const r = await manager.deleteKeyAlias({ ...p, id: keyId, alias });
    assert.strictEqual(r.status, 204);
    await refused(reader.getKey({ ...p, id: alias }), 404);
    await refused(manager.deleteKeyAlias({ ...p, id: keyId, alias }), 404);
  });
}

// Key rings: created, listed, a key moved in and out, deleted.
async function ringChecks(p) {
  const ring = `sdk-ring-${process.pid}`;
  let keyId;

  await check('key rings: create and list', async () => {
    const r = await manager.createKeyRing({ ...p, keyRingId: ring });
    assert.strictEqual(r.status, 201);
    const l = await reader.listKeyRings({ ...p });
    const ids = l.result.resources.map((g) => g.id);
    assert.ok(ids.includes('default') && ids.includes(ring), ids.join(','));
  });

  // The pinned SDK (0.1.2) predates patchKey: the same request through the SDK's own request
  // machinery (its authenticator, base URL and error handling), as later SDKs send it.
  const patchKey = (c, id, keyRing, body) =>
    c.createRequest({
      options: { url: '/api/v2/keys/{id}', method: 'PATCH', body, path: { id } },
      defaultOptions: {
        ...c.baseOptions,
        headers: {
          'Accept': 'application/json',
          'Content-Type': 'application/vnd.ibm.kms.key+json',
          'Bluemix-Instance': instance,
          'X-Kms-Key-Ring': keyRing,
        },
      },
    });

  await check('key rings: PATCH /keys/{id} moves a key in and out', async () => {
    const k = await writer.createKey({ ...p, body: keyBody({ name: 'sdk-ringed' }) });
    keyId = k.result.resources[0].id;
    let r = await patchKey(manager, keyId, 'default', { keyRingID: ring });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.result.resources[0].keyRingID, ring);
    await refused(manager.deleteKeyRing({ ...p, keyRingId: ring }), 409);
    await refused(patchKey(manager, keyId, 'default', { keyRingID: 'default' }), 404);
    r = await patchKey(manager, keyId, ring, { keyRingID: 'default' });
    assert.strictEqual(r.result.resources[0].keyRingID, 'default');
  });

  await check('key rings: delete', async () => {
    const r = await manager.deleteKeyRing({ ...p, keyRingId: ring });
    assert.strictEqual(r.status, 204);
    await refused(manager.deleteKeyRing({ ...p, keyRingId: ring }), 404);
  });
}

// Import tokens and secure import as a Key Protect client does them with node's crypto: the
// key RSAES-OAEP encrypted to the token's public key, the token's nonce AES-GCM encrypted under
// the key; then registrations (none) and sync (too early after a change).
async function importTokenChecks(p) {
  let pub;
  let nonce;
  let importedId;
  const key = crypto.randomBytes(32);
  const seal = (k, n, oaepHash = 'sha256') => {
    const iv = crypto.randomBytes(12);
    const c = crypto.createCipheriv(`aes-${k.length * 8}-gcm`, k, iv);
    const enc = Buffer.concat([c.update(n), c.final(), c.getAuthTag()]);
    const payload = crypto.publicEncrypt(
      { key: pub, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, k);
    return {
      payload: payload.toString('base64'),
      encryptedNonce: enc.toString('base64'),
      iv: iv.toString('base64'),
    };
  };
  const retrieve = async (left) => {
    const r = await writer.getImportToken({ ...p });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.result.maxAllowedRetrievals, 2);
    assert.strictEqual(r.result.remainingRetrievals, left);
    pub = Buffer.from(r.result.payload, 'base64').toString();
    nonce = Buffer.from(r.result.nonce, 'base64');
    assert.ok(pub.startsWith('-----BEGIN PUBLIC KEY-----'), pub.slice(0, 40));
    assert.strictEqual(nonce.length, 12);
  };

  await check('import token: a Reader may not create one (403)', async () => {
    await refused(reader.postImportToken({ ...p, expiration: 600 }), 403);
  });

  await check('import token: postImportToken', async () => {
    const r = await writer.postImportToken({ ...p, expiration: 900, maxAllowedRetrievals: 2 });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.result.maxAllowedRetrievals, 2);
    assert.strictEqual(r.result.remainingRetrievals, 2);
    const secs = (Date.parse(r.result.expirationDate) - Date.parse(r.result.creationDate)) / 1000;
    assert.strictEqual(secs, 900);
  });

  await check('import token: getImportToken gives a public key and a nonce', async () => {
    await retrieve(1);
  });

  await check('secure import of a root key', async () => {
    const r = await writer.createKey({
      ...p,
      body: keyBody({ name: 'sdk-secure', extractable: false, ...seal(key, nonce) }),
    });
    assert.strictEqual(r.status, 201);
    assert.strictEqual(r.result.resources[0].imported, true);
    importedId = r.result.resources[0].id;
  });

  await check('the imported key is the one sent: a wrap opens with it', async () => {
    const r = await writer.wrapKey({
      ...p, id: importedId, keyActionWrapBody: { plaintext: b64('secured') },
    });
    const ct = Buffer.from(r.result.ciphertext, 'base64');
    const id = Buffer.from(importedId);
    const hdr = Buffer.alloc(4 + 2 + id.length + 8);
    hdr.write('KYW1', 0);
    hdr.writeUInt16BE(id.length, 4);
    id.copy(hdr, 6);
    hdr.writeUInt32BE(ct.readUInt32BE(4), 6 + id.length);
    const d = crypto.createDecipheriv('aes-256-gcm', key, ct.subarray(8, 20));
    d.setAAD(hdr);
    d.setAuthTag(ct.subarray(ct.length - 16));
    const pt = Buffer.concat([d.update(ct.subarray(20, ct.length - 16)), d.final()]);
    assert.strictEqual(pt.toString(), 'secured');
  });

  await check('secure import with the nonce used already is refused (400)', async () => {
    const e = await refused(writer.createKey({
      ...p, body: keyBody({ name: 'sdk-again', extractable: false, ...seal(key, nonce) }),
    }), 400);
    assert.ok(e.body.includes('INCORRECT_NONCE_ERR'), e.body);
  });

  await check('secure rotation of the imported key (SHA-1 OAEP)', async () => {
    await retrieve(0);
    const k2 = crypto.randomBytes(16);
    const r = await writer.rotateKey({
      ...p,
      id: importedId,
      keyActionRotateBody: { ...seal(k2, nonce, 'sha1'), encryptionAlgorithm: 'RSAES_OAEP_SHA_1' },
    });
    assert.ok(r.status === 204 || r.status === 200, `status ${r.status}`);
    const v = await reader.getKeyVersions({ ...p, id: importedId });
    assert.strictEqual(v.result.resources.length, 2);
  });

  await check('import token: retrievals used up (409)', async () => {
    const e = await refused(writer.getImportToken({ ...p }), 409);
    assert.ok(e.body.includes('IMPORT_TOKEN_RETRIEVALS_USED_UP_ERR'), e.body);
  });

  await check('registrations: none for a key, none for all keys', async () => {
    const r = await reader.getRegistrations({ ...p, id: importedId });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.result.metadata.collectionTotal, 0);
    const all = await reader.getRegistrationsAllKeys({ ...p });
    assert.strictEqual(all.status, 200);
    assert.strictEqual(all.result.metadata.collectionTotal, 0);
  });

  await check('sync of a key changed within the hour: 409 REQ_TOO_EARLY_ERR', async () => {
    const e = await refused(writer.syncAssociatedResources({ ...p, id: importedId }), 409);
    assert.ok(e.body.includes('REQ_TOO_EARLY_ERR'), e.body);
  });
}

async function main() {
  const p = { bluemixInstance: instance };
  let rootId;
  let stdId;
  let wrapped;
  let dek;
  let ctAad;
  let version1;

  await check('create a root key', async () => {
    const r = await writer.createKey({
      ...p,
      body: keyBody({ name: 'sdk-root', description: 'made by the SDK test', extractable: false }),
      prefer: 'return=representation',
    });
    assert.strictEqual(r.status, 201);
    const k = r.result.resources[0];
    assert.strictEqual(k.name, 'sdk-root');
    assert.strictEqual(k.state, 1);
    assert.strictEqual(k.extractable, false);
    assert.strictEqual(k.payload, undefined);
    rootId = k.id;
    version1 = k.keyVersion.id;
  });

  await check('list keys with filters and total', async () => {
    const r = await reader.getKeys({ ...p, limit: 10, offset: 0, state: [1, 2], extractable: false });
    assert.ok(r.result.resources.some((k) => k.id === rootId));
    assert.ok(r.result.metadata.collectionTotal >= 1);
    const h = await reader.getKeyCollectionMetadata({ ...p });
    assert.ok(Number(h.headers['key-total']) >= 1, `Key-Total ${h.headers['key-total']}`);
  });

  await check('wrap without plaintext makes a 256-bit data key', async () => {
    const r = await reader.wrapKey({ ...p, id: rootId, keyActionWrapBody: {} });
    dek = r.result.plaintext;
    wrapped = r.result.ciphertext;
    assert.strictEqual(Buffer.from(dek, 'base64').length, 32);
    assert.strictEqual(r.result.keyVersion.id, version1);
  });

  await check('unwrap gives the data key back', async () => {
    const r = await reader.unwrapKey({ ...p, id: rootId, keyActionUnwrapBody: { ciphertext: wrapped } });
    assert.strictEqual(r.result.plaintext, dek);
  });

  await check('wrap and unwrap with additional authenticated data', async () => {
    const r = await reader.wrapKey({
      ...p,
      id: rootId,
      keyActionWrapBody: { plaintext: b64('my data key'), aad: ['tenant-1', 'bucket-7'] },
    });
    ctAad = r.result.ciphertext;
    const u = await reader.unwrapKey({
      ...p,
      id: rootId,
      keyActionUnwrapBody: { ciphertext: ctAad, aad: ['tenant-1', 'bucket-7'] },
    });
    assert.strictEqual(Buffer.from(u.result.plaintext, 'base64').toString(), 'my data key');
  });

  await check('unwrap with the wrong aad is refused (422)', async () => {
    await refused(
      reader.unwrapKey({ ...p, id: rootId, keyActionUnwrapBody: { ciphertext: ctAad, aad: ['tenant-2'] } }),
      422,
    );
  });

  await check('a reader cannot rotate (403)', async () => {
    await refused(reader.rotateKey({ ...p, id: rootId }), 403);
  });

  await check('rotate makes a new version', async () => {
    const r = await writer.rotateKey({ ...p, id: rootId });
    assert.ok(r.status === 204 || r.status === 200, `status ${r.status}`);
    const v = await reader.getKeyVersions({ ...p, id: rootId });
    assert.strictEqual(v.result.resources.length, 2);
    assert.strictEqual(v.result.resources[1].id, version1);
  });

  await check('unwrap of an old ciphertext returns it rewrapped', async () => {
    const r = await reader.unwrapKey({ ...p, id: rootId, keyActionUnwrapBody: { ciphertext: wrapped } });
    assert.strictEqual(r.result.plaintext, dek);
    assert.strictEqual(r.result.keyVersion.id, version1);
    assert.ok(r.result.ciphertext && r.result.ciphertext !== wrapped);
    assert.notStrictEqual(r.result.rewrappedKeyVersion.id, version1);
  });

  await check('rewrap moves a ciphertext to the newest version', async () => {
    const r = await reader.rewrapKey({ ...p, id: rootId, keyActionRewrapBody: { ciphertext: wrapped } });
    assert.strictEqual(r.result.keyVersion.id, version1);
    assert.notStrictEqual(r.result.rewrappedKeyVersion.id, version1);
    const u = await reader.unwrapKey({
      ...p,
      id: rootId,
      keyActionUnwrapBody: { ciphertext: r.result.ciphertext },
    });
    assert.strictEqual(u.result.plaintext, dek);
    assert.strictEqual(u.result.ciphertext, undefined);
  });

  await check('disable: wrap refused, everywhere', async () => {
    await manager.disableKey({ ...p, id: rootId });
    await refused(reader.wrapKey({ ...p, id: rootId, keyActionWrapBody: {} }), 409);
    if (manager2) {
      await refused(manager2.unwrapKey({ ...p, id: rootId, keyActionUnwrapBody: { ciphertext: wrapped } }), 409);
    }
    const m = await reader.getKeyMetadata({ ...p, id: rootId });
    assert.strictEqual(m.result.resources[0].state, 2);
  });

  await check('enable: wrap works again', async () => {
    await manager.enableKey({ ...p, id: rootId });
    await reader.wrapKey({ ...p, id: rootId, keyActionWrapBody: {} });
    if (manager2) {
      await manager2.unwrapKey({ ...p, id: rootId, keyActionUnwrapBody: { ciphertext: wrapped } });
    }
  });

  await check('key policies: dual authorization delete on', async () => {
    await manager.putPolicy({
      ...p,
      id: rootId,
      policy: 'dualAuthDelete',
      setKeyPoliciesOneOf: {
        metadata: { collectionType: 'application/vnd.ibm.kms.policy+json', collectionTotal: 1 },
        resources: [{ type: 'application/vnd.ibm.kms.policy+json', dualAuthDelete: { enabled: true } }],
      },
    });
    const g = await manager.getPolicy({ ...p, id: rootId });
    const d = g.result.resources.find((x) => x.dualAuthDelete);
    assert.strictEqual(d.dualAuthDelete.enabled, true);
  });

  await check('delete without a second user is refused', async () => {
    await refused(manager.deleteKey({ ...p, id: rootId }), 409);
  });

  await check('the same user cannot set and delete', async () => {
    await manager.setKeyForDeletion({ ...p, id: rootId });
    await refused(manager.deleteKey({ ...p, id: rootId }), 403);
    await manager.unsetKeyForDeletion({ ...p, id: rootId });
  });

  await check('dual authorization delete: writer sets, manager deletes', async () => {
    await writer.setKeyForDeletion({ ...p, id: rootId });
    const m = await reader.getKeyMetadata({ ...p, id: rootId });
    assert.strictEqual(m.result.resources[0].dualAuthDelete.keySetForDeletion, true);
    const d = await manager.deleteKey({ ...p, id: rootId, prefer: 'return=representation' });
    assert.strictEqual(d.result.resources[0].state, 5);
    await refused(reader.unwrapKey({ ...p, id: rootId, keyActionUnwrapBody: { ciphertext: wrapped } }), 410);
  });

  await check('restore within 30 days', async () => {
    const r = await manager.restoreKey({ ...p, id: rootId });
    assert.strictEqual(r.status, 201);
    const m = await reader.getKeyMetadata({ ...p, id: rootId });
    assert.strictEqual(m.result.resources[0].state, 1);
    const u = await reader.unwrapKey({ ...p, id: rootId, keyActionUnwrapBody: { ciphertext: wrapped } });
    assert.strictEqual(u.result.plaintext, dek);
  });

  await check('standard key: payload for a writer, not for a reader', async () => {
    const r = await writer.createKey({
      ...p,
      body: keyBody({ name: 'sdk-standard', extractable: true, payload: b64('standard secret') }),
    });
    stdId = r.result.resources[0].id;
    const w = await writer.getKey({ ...p, id: stdId });
    assert.strictEqual(Buffer.from(w.result.resources[0].payload, 'base64').toString(), 'standard secret');
    const rd = await reader.getKey({ ...p, id: stdId });
    assert.strictEqual(rd.result.resources[0].payload, undefined);
  });

  await check('instance policy: dual authorization for new keys', async () => {
    await manager.putInstancePolicy({
      ...p,
      policy: 'dualAuthDelete',
      setInstancePoliciesOneOf: {
        metadata: { collectionType: 'application/vnd.ibm.kms.policy+json', collectionTotal: 1 },
        resources: [{ policy_type: 'dualAuthDelete', policy_data: { enabled: true } }],
      },
    });
    const g = await manager.getInstancePolicy({ ...p });
    assert.strictEqual(g.result.resources[0].policy_data.enabled, true);
    const r = await writer.createKey({ ...p, body: keyBody({ name: 'sdk-dual' }) });
    assert.strictEqual(r.result.resources[0].dualAuthDelete.enabled, true);
    await manager.putInstancePolicy({
      ...p,
      setInstancePoliciesOneOf: {
        metadata: { collectionType: 'application/vnd.ibm.kms.policy+json', collectionTotal: 1 },
        resources: [{ policy_type: 'dualAuthDelete', policy_data: { enabled: false } }],
      },
    });
  });

  await check('instance policies: allowedNetwork, allowedIP and metrics at once', async () => {
    const put = await manager.putInstancePolicy({
      ...p,
      setInstancePoliciesOneOf: {
        metadata: { collectionType: 'application/vnd.ibm.kms.policy+json', collectionTotal: 3 },
        resources: [
          {
            policy_type: 'allowedNetwork',
            policy_data: { enabled: true, attributes: { allowed_network: 'public-and-private' } },
          },
          {
            policy_type: 'allowedIP',
            policy_data: { enabled: true, attributes: { allowed_ip: ['127.0.0.0/8', '::1/128'] } },
          },
          { policy_type: 'metrics', policy_data: { enabled: true } },
        ],
      },
    });
    assert.strictEqual(put.status, 204);
    const g = await manager.getInstancePolicy({ ...p });
    const byType = Object.fromEntries(g.result.resources.map((r) => [r.policy_type, r]));
    assert.strictEqual(byType.allowedNetwork.policy_data.attributes.allowed_network, 'public-and-private');
    assert.deepStrictEqual(byType.allowedIP.policy_data.attributes.allowed_ip, ['127.0.0.0/8', '::1/128']);
    assert.strictEqual(byType.metrics.policy_data.enabled, true);
    for (const t of ['allowedNetwork', 'allowedIP', 'metrics'])
      assert.ok(byType[t].creationDate && byType[t].createdBy && byType[t].updatedBy && byType[t].lastUpdated);
    const one = await manager.getInstancePolicy({ ...p, policy: 'allowedIP' });
    assert.strictEqual(one.result.resources.length, 1);
    // The caller (loopback) is listed: served. Turned off again for what follows.
    await reader.getKeys({ ...p });
    await manager.putInstancePolicy({
      ...p,
      policy: 'allowedIP',
      setInstancePoliciesOneOf: {
        metadata: { collectionType: 'application/vnd.ibm.kms.policy+json', collectionTotal: 1 },
        resources: [{ policy_type: 'allowedIP', policy_data: { enabled: false } }],
      },
    });
  });

  await importTokenChecks(p);

  await check('another instance id is refused', async () => {
    await refused(reader.getKeys({ bluemixInstance: 'not-this-instance' }), 401);
  });

  await check('a bad API key gets no token', async () => {
    await refused(client('kyok_not-a-key').getKeys({ ...p }), 400);
  });

  await aliasChecks(p);
  await ringChecks(p);

  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(`error: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
