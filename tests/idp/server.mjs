// Test identity provider for Tollgate's integration tests: a real, certified OpenID
// provider (npm oidc-provider) on a loopback port, issuing RFC 9068 JWT access tokens
// through client_credentials with resource indicators, plus loopback-only test hooks
// (key rotation, signing raw payloads, request counters). See README.md.
import http from 'node:http';
import { randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import { CompactSign, exportJWK, generateKeyPair } from 'jose';

const ALGS = ['RS256', 'ES256', 'EdDSA'];
const CLIENT_ID = 'tollgate-test';
const CLIENT_SECRET = 'tollgate-test-secret';
const SCOPES = 'openid read:items write:items admin:all';

// Published keys, newest last; `current[alg]` is the kid that signs tokens of that alg.
const keys = []; // { kid, alg, privateJwk, privateKey }
const current = {};
const stats = { jwks_requests: 0, discovery_requests: 0 };

async function newKey(alg) {
  const opts = alg === 'EdDSA' ? { crv: 'Ed25519', extractable: true } : { extractable: true };
  const { privateKey } = await generateKeyPair(alg, opts);
  const jwk = await exportJWK(privateKey);
  const kid = `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`;
  Object.assign(jwk, { kid, alg, use: 'sig' });
  const key = { kid, alg, privateJwk: jwk, privateKey };
  keys.push(key);
  current[alg] = kid;
  return key;
}

function parseJsonParam(value) {
  if (!value) return {};
  const parsed = JSON.parse(value);
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error('claims must be a JSON object');
  }
  return parsed;
}

let issuer;
let handler;

function buildProvider() {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPES,
    }],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    jwks: { keys: keys.map((k) => k.privateJwk) },
    scopes: SCOPES.split(' '),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'api://tollgate-test',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          const extra = ctx.oidc.body || {};
          const alg = extra.alg || 'RS256';
          if (!ALGS.includes(alg)) throw new Error(`unsupported alg ${alg}`);
          const ttl = Number.parseInt(extra.ttl || '600', 10);
          return {
            scope: SCOPES,
            audience: resourceIndicator,
            accessTokenTTL: ttl > 0 ? ttl : 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg, kid: current[alg] } },
          };
        },
      },
    },
    ttl: {
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || 600,
    },
    formats: {
      customizers: {
        // Runs after oidc-provider built the payload: extra claims and `sub` win.
        async jwt(ctx, token, jwt) {
          const params = ctx?.oidc?.body || {};
          Object.assign(jwt.payload, parseJsonParam(params.claims));
          if (params.sub) jwt.payload.sub = params.sub;
        },
      },
    },
  });
  provider.on('server_error', (ctx, err) => console.error('idp server_error:', err));
  return provider.callback();
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

async function hook(req, res, url) {
  const remote = req.socket.remoteAddress || '';
  if (!process.env.IDP_HOOKS_ANYWHERE && !['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(remote)) {
    return send(res, 403, { error: 'loopback only' });
  }
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'POST /test/rotate': {
      const alg = url.searchParams.get('alg') || 'RS256';
      if (!ALGS.includes(alg)) return send(res, 400, { error: `unsupported alg ${alg}` });
      const key = await newKey(alg);
      handler = buildProvider();
      return send(res, 200, { kid: key.kid, kids: keys.map((k) => k.kid) });
    }
    case 'POST /test/retire': {
      const keep = new Set(Object.values(current));
      for (let i = keys.length - 1; i >= 0; i -= 1) {
        if (!keep.has(keys[i].kid)) keys.splice(i, 1);
      }
      handler = buildProvider();
      return send(res, 200, { kids: keys.map((k) => k.kid) });
    }
    case 'POST /test/sign': {
      let body;
      try {
        body = JSON.parse(await readBody(req));
      } catch {
        return send(res, 400, { error: 'body must be JSON' });
      }
      const alg = body.alg || 'RS256';
      const key = keys.find((k) => k.kid === current[alg]);
      if (!key) return send(res, 400, { error: `unsupported alg ${alg}` });
      if (typeof body.payload !== 'string') return send(res, 400, { error: 'payload must be a string' });
      const header = { alg, kid: key.kid, typ: 'at+jwt', ...(body.header || {}) };
      // jose refuses some headers it cannot honour (crit); sign by hand for those.
      const token = await signRaw(header, body.payload, key.privateKey);
      return send(res, 200, { token });
    }
    case 'GET /test/stats':
      return send(res, 200, stats);
    case 'POST /test/stats/reset':
      stats.jwks_requests = 0;
      stats.discovery_requests = 0;
      return send(res, 200, stats);
    default:
      return send(res, 404, { error: 'no such hook' });
  }
}

async function signRaw(header, payloadText, privateKey) {
  const { crit, ...rest } = header;
  if (crit === undefined) {
    return new CompactSign(new TextEncoder().encode(payloadText))
      .setProtectedHeader(rest)
      .sign(privateKey);
  }
  // With `crit`, jose wants to understand the extension; sign the same bytes ourselves
  // by letting jose sign an equivalent header through its unencoded-payload-free path.
  const b64 = (s) => Buffer.from(s).toString('base64url');
  const protectedB64 = b64(JSON.stringify(header));
  const input = `${protectedB64}.${b64(payloadText)}`;
  const { subtle } = globalThis.crypto;
  const algs = {
    RS256: { name: 'RSASSA-PKCS1-v1_5' },
    ES256: { name: 'ECDSA', hash: 'SHA-256' },
    EdDSA: { name: 'Ed25519' },
  };
  const sig = await subtle.sign(algs[header.alg], privateKey, new TextEncoder().encode(input));
  return `${input}.${Buffer.from(sig).toString('base64url')}`;
}

for (const alg of ALGS) await newKey(alg);

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname.startsWith('/test/')) {
    hook(req, res, url).catch((err) => send(res, 500, { error: String(err) }));
    return;
  }
  if (req.method === 'GET' && url.pathname === '/jwks') stats.jwks_requests += 1;
  if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') stats.discovery_requests += 1;
  handler(req, res);
});

// IDP_HOST / IDP_ISSUER let the container image (deploy/compose.yaml) listen on all
// interfaces and name itself by its service name; tests use the loopback defaults.
const host = process.env.IDP_HOST || '127.0.0.1';
server.listen(Number.parseInt(process.env.IDP_PORT || '0', 10), host, () => {
  const { port } = server.address();
  issuer = process.env.IDP_ISSUER || `http://127.0.0.1:${port}`;
  handler = buildProvider();
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
