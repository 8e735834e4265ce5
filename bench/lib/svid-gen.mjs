/**
 * Many distinct X509-SVIDs for the SVID-churn section (section-scale.mjs): each is an EC P-256
 * leaf (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md: one URI SAN, CA=false,
 * keyUsage digitalSignature) for `spiffe://example.org/ns/default/sa/frontend/w<N>`, which the
 * demo policy's `orders` rule admits. They are built as DER by hand and signed with node:crypto
 * (~50 µs each; @peculiar/x509 would take ~2 ms), then put into copies of the reference
 * CheckRequest (certificate Envoy-URL-encoded, principal = the same ID), framed for gRPC, and
 * cached under .bench/ (100,000 requests ≈ 140 MB, a few seconds to make).
 */
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { frameMessage, splitFrames } from './grpc-wire.mjs';

const GENERATOR_VERSION = 'svid-gen.v1';

/** @param {number} n */
function derLength(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/**
 * @param {number} tag
 * @param {...Buffer} parts
 */
function tlv(tag, ...parts) {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const seq = (...parts) => tlv(0x30, ...parts);
const hex = (h) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

const ECDSA_WITH_SHA256 = seq(hex('06 08 2a 86 48 ce 3d 04 03 02'));
const ISSUER = seq(tlv(0x31, seq(hex('06 03 55 04 0a'), tlv(0x0c, Buffer.from('chio bench CA')))));
const SUBJECT = seq(tlv(0x31, seq(hex('06 03 55 04 0a'), tlv(0x0c, Buffer.from('chio bench')))));
// 2025-01-01 .. 2045-01-01 (UTCTime): fixed, so the cached requests never expire
const VALIDITY = seq(tlv(0x17, Buffer.from('250101000000Z')), tlv(0x17, Buffer.from('450101000000Z')));
const BOOLEAN_TRUE = hex('01 01 ff');
const BASIC_CONSTRAINTS_LEAF = seq(hex('06 03 55 1d 13'), BOOLEAN_TRUE, tlv(0x04, seq()));
const KEY_USAGE_DIGITAL_SIGNATURE = seq(hex('06 03 55 1d 0f'), BOOLEAN_TRUE, tlv(0x04, hex('03 02 07 80')));

/** @param {string} uri */
function subjectAltNameUri(uri) {
  return seq(hex('06 03 55 1d 11'), BOOLEAN_TRUE, tlv(0x04, seq(tlv(0x86, Buffer.from(uri, 'ascii')))));
}

/** Envoy's encoding of `source.certificate` (SPEC §3; SslSocketInfo::urlEncodedPemEncodedPeerCertificate). */
export function envoyUrlEncode(pem) {
  return pem.replace(/\n/g, '%0A').replace(/ /g, '%20').replace(/\+/g, '%2B').replace(/\//g, '%2F').replace(/=/g, '%3D');
}

/** @param {Buffer} der */
function pemOf(der) {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

/**
 * A generator of leaves: one CA key signs, one leaf key is certified (the chain is not checked:
 * the bench config has no trust bundle; the leaf's own rules are).
 */
export function svidFactory() {
  const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const leaf = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = leaf.publicKey.export({ type: 'spki', format: 'der' });
  /** @param {number} serial @param {string} uri */
  return (serial, uri) => {
    const tbs = seq(
      tlv(0xa0, hex('02 01 02')), // v3
      tlv(0x02, Buffer.from([0x01, (serial >>> 24) & 0xff, (serial >>> 16) & 0xff, (serial >>> 8) & 0xff, serial & 0xff])),
      ECDSA_WITH_SHA256,
      ISSUER,
      VALIDITY,
      SUBJECT,
      spki,
      tlv(0xa3, seq(BASIC_CONSTRAINTS_LEAF, KEY_USAGE_DIGITAL_SIGNATURE, subjectAltNameUri(uri))),
    );
    const signature = sign('sha256', tbs, ca.privateKey);
    return pemOf(seq(tbs, ECDSA_WITH_SHA256, tlv(0x03, Buffer.from([0]), signature)));
  };
}

/** The SPIFFE ID of workload n. */
export const workloadId = (n) => `spiffe://example.org/ns/default/sa/frontend/w${n}`;

/**
 * `count` framed CheckRequests, request n from workload n, made from the reference request, cached
 * in `cacheDir`. Returns the frames.
 * @param {{repoRoot: string, cacheDir: string, referenceRequest: Buffer, count: number, log?: (m: string) => void}} o
 * @returns {Promise<Buffer[]>}
 */
export async function svidRequests(o) {
  const key = createHash('sha256').update(GENERATOR_VERSION).update(o.referenceRequest).digest('hex').slice(0, 12);
  const file = path.join(o.cacheDir, `svid-requests-${o.count}-${key}.bin`);
  if (existsSync(file)) return splitFrames(readFileSync(file));
  o.log?.(`  generating ${o.count.toLocaleString('en-US')} distinct X509-SVIDs and their CheckRequests into ${path.relative(o.repoRoot, file)} (once)`);
  const envoy = await import(path.join(o.repoRoot, 'dist', 'check', 'envoy.js'));
  const service = envoy.loadAuthProtos()[envoy.AUTHORIZATION_SERVICE];
  const check = service?.Check;
  if (!check) throw new TypeError('envoy.service.auth.v3.Authorization/Check not found in the Envoy protos');
  const request = check.requestDeserialize(o.referenceRequest);
  const make = svidFactory();
  const frames = [];
  for (let n = 0; n < o.count; n++) {
    const uri = workloadId(n);
    request.attributes.source.certificate = envoyUrlEncode(make(n + 1, uri));
    request.attributes.source.principal = uri;
    frames.push(frameMessage(check.requestSerialize(request)));
  }
  mkdirSync(o.cacheDir, { recursive: true });
  writeFileSync(`${file}.tmp`, Buffer.concat(frames));
  renameSync(`${file}.tmp`, file);
  return frames;
}
