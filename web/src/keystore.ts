/**
 * Identity keys in this browser, in exactly the format of the `chat` CLI: each secp256k1 key a JSON keystore
 * version 3 (Web3 Secret Storage: scrypt with ethers' default parameters, AES-128-CTR, keccak256 MAC, the
 * cipher section under lowercase `crypto`) encrypted with the user's password, one record per
 * (username, key index) in IndexedDB. Older keys stay, so that messages still sealed to them can be read.
 *
 * A linked browser holds no identity key; its device secret (which opens its MLS state) is kept here too,
 * sealed under the password (scrypt, then AES-256-GCM), as the CLI keeps it in device-secret.json.
 */
import { Wallet, decryptKeystoreJson, encryptKeystoreJson, scrypt, type KeystoreAccount } from "ethers";
import { bytesToHex, hexToBytes, randomBytes, utf8Bytes } from "../../protocol/bytes";
import { ChatError } from "../../protocol/errors";
import { publicKeyOf, publicKeyToAddress } from "../../protocol/keys";
import { assertUsername } from "../../protocol/username";
import { toWeb3SecretStorage, type LocalKey } from "../../protocol/web3-keystore";
import { Idb } from "./idb";

export const APP_DATABASE = "eth-chat";
const KEYSTORES = "keystores";
const IDENTITIES = "identities";
const DEVICES = "linked-devices";
const STORES = [KEYSTORES, IDENTITIES, DEVICES] as const;

/** ethers' keystore defaults: the same cost as the CLI's files (about 1 s in Chromium). */
const SCRYPT = { N: 1 << 17, r: 8, p: 1 } as const;


export interface UnlockedKey {
  index: number;
  privateKey: string;
}

/** A linked browser: its device id and credential from the approval, its secret sealed under the password. */
export interface LinkedDeviceRecord {
  username: string;
  deviceId: string;
  /** the newest device credential (base64) the relay gave it */
  credential: string;
  keyIndex: number;
  scrypt: { N: number; r: number; p: number; salt: string };
  /** hex: 12-byte nonce || AES-256-GCM ciphertext of the 32-byte device secret */
  sealed: string;
}

/** Reports scrypt's progress, 0 to 1, for a progress text while it runs. */
export type Progress = (fraction: number) => void;

let dbPromise: Promise<Idb> | undefined;

function db(): Promise<Idb> {
  dbPromise ??= Idb.open(APP_DATABASE, STORES).catch((error: unknown) => {
    dbPromise = undefined;
    throw error;
  });
  return dbPromise;
}

/** Forgets the open database handle (logout deletes the database). */
export function closeKeystore(): void {
  const pending = dbPromise;
  dbPromise = undefined;
  void pending?.then((handle) => handle.close()).catch(() => undefined);
}

const keystoreKey = (username: string, index: number) => `${username}/${index}`;

function checkIndex(index: number): number {
  if (!Number.isSafeInteger(index) || index < 0) throw new ChatError("BAD_REQUEST", `not a key index: ${index}`);
  return index;
}

/** This browser's keys of `username`, oldest first (pending ones included). */
export async function localKeys(username: string): Promise<LocalKey[]> {
  const keys = await (await db()).get<LocalKey[]>(IDENTITIES, assertUsername(username));
  return Array.isArray(keys) ? [...keys].sort((a, b) => a.index - b.index) : [];
}

async function writeKeys(username: string, keys: LocalKey[]): Promise<void> {
  await (await db()).put(IDENTITIES, username, [...keys].sort((a, b) => a.index - b.index));
}

/** Encrypts `privateKey` with the password and records it as the user's key `index`. */
export async function storeKey(params: { username: string; index: number; privateKey: string; password: string; pending: boolean; progress?: Progress }): Promise<LocalKey> {
  const username = assertUsername(params.username);
  const index = checkIndex(params.index);
  const publicKey = publicKeyOf(params.privateKey);
  const account: KeystoreAccount = { address: publicKeyToAddress(publicKey), privateKey: params.privateKey };
  const json = await encryptKeystoreJson(account, params.password.normalize("NFC"), { scrypt: { ...SCRYPT }, progressCallback: params.progress });
  const store = await db();
  await store.put(KEYSTORES, keystoreKey(username, index), JSON.stringify(toWeb3SecretStorage(JSON.parse(json) as Record<string, unknown>)));
  const key: LocalKey = { index, publicKey, address: account.address, createdAt: Date.now(), ...(params.pending ? { pending: true } : {}) };
  await writeKeys(username, [...(await localKeys(username)).filter((k) => k.index !== index), key]);
  return key;
}

/** The stored keystore JSON of key `index` (Web3 Secret Storage v3), e.g. to export it to the CLI. */
export async function keystoreJson(username: string, index: number): Promise<string | undefined> {
  return (await db()).get<string>(KEYSTORES, keystoreKey(assertUsername(username), checkIndex(index)));
}

/** Marks key `index` as on chain. */
export async function confirmKey(username: string, index: number): Promise<void> {
  await writeKeys(username, (await localKeys(username)).map((k) => (k.index === index ? { index: k.index, publicKey: k.publicKey, address: k.address, createdAt: k.createdAt } : k)));
}

/** Forgets a key that never reached the chain. */
export async function dropPendingKey(username: string, index: number): Promise<void> {
  const keys = await localKeys(username);
  if (!keys.some((k) => k.index === index && k.pending)) return;
  await writeKeys(username, keys.filter((k) => k.index !== index));
  await (await db()).delete(KEYSTORES, keystoreKey(username, index));
}

/** Decrypts key `index` of `username`; WRONG_PASSWORD when the password does not open it. */
export async function unlockKey(params: { username: string; index: number; password: string; progress?: Progress }): Promise<UnlockedKey> {
  const json = await keystoreJson(params.username, params.index);
  if (!json) throw new ChatError("NO_LOCAL_KEY", `no key ${params.index} of ${params.username} in this browser`);
  let account: KeystoreAccount;
  try {
    account = await decryptKeystoreJson(json, params.password.normalize("NFC"), params.progress);
  } catch (error) {
    if (/incorrect password/.test((error as Error).message)) throw new ChatError("WRONG_PASSWORD", `wrong password for ${params.username}`);
    throw new ChatError("BAD_REQUEST", `the stored keystore of key ${params.index} of ${params.username} is damaged`);
  }
  return { index: params.index, privateKey: account.privateKey };
}

/** A fresh identity key from the browser's CSPRNG (crypto.getRandomValues, through ethers). */
export function newPrivateKey(): string {
  return Wallet.createRandom().privateKey;
}

async function passwordKey(password: string, salt: Uint8Array, params: { N: number; r: number; p: number }, progress?: Progress): Promise<CryptoKey> {
  const raw = hexToBytes(await scrypt(utf8Bytes(password.normalize("NFC")), salt, params.N, params.r, params.p, 32, progress));
  return crypto.subtle.importKey("raw", raw as Uint8Array<ArrayBuffer>, "AES-GCM", false, ["encrypt", "decrypt"]);
}

const DEVICE_SECRET_AAD = utf8Bytes("eth-chat device secret v1");

/** Seals a linked browser's device secret under the password and records the device. */
export async function storeLinkedDevice(params: {
  username: string;
  deviceId: string;
  credential: string;
  keyIndex: number;
  deviceSecret: Uint8Array;
  password: string;
  progress?: Progress;
}): Promise<void> {
  const username = assertUsername(params.username);
  if (params.deviceSecret.length !== 32) throw new ChatError("BAD_REQUEST", "a device secret is 32 bytes");
  const salt = randomBytes(16);
  const nonce = randomBytes(12);
  const key = await passwordKey(params.password, salt, SCRYPT, params.progress);
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce as Uint8Array<ArrayBuffer>, additionalData: DEVICE_SECRET_AAD as Uint8Array<ArrayBuffer> }, key, params.deviceSecret as Uint8Array<ArrayBuffer>),
  );
  const record: LinkedDeviceRecord = {
    username,
    deviceId: params.deviceId,
    credential: params.credential,
    keyIndex: params.keyIndex,
    scrypt: { ...SCRYPT, salt: bytesToHex(salt) },
    sealed: bytesToHex(nonce) + bytesToHex(ciphertext),
  };
  await (await db()).put(DEVICES, username, record);
}

export async function linkedDevice(username: string): Promise<LinkedDeviceRecord | undefined> {
  return (await db()).get<LinkedDeviceRecord>(DEVICES, assertUsername(username));
}

/** Keeps the newest credential the relay gave a linked browser (after a rotation elsewhere). */
export async function updateLinkedCredential(username: string, credential: string, keyIndex: number): Promise<void> {
  const record = await linkedDevice(username);
  if (record) await (await db()).put(DEVICES, record.username, { ...record, credential, keyIndex });
}

/** Opens a linked browser's device secret; WRONG_PASSWORD when the password does not open it. */
export async function unlockDeviceSecret(username: string, password: string, progress?: Progress): Promise<{ record: LinkedDeviceRecord; deviceSecret: Uint8Array }> {
  const record = await linkedDevice(username);
  if (!record) throw new ChatError("NO_LOCAL_KEY", `this browser is not a linked device of ${username}`);
  const key = await passwordKey(password, hexToBytes(record.scrypt.salt), record.scrypt, progress);
  const sealed = hexToBytes(record.sealed);
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: sealed.subarray(0, 12) as Uint8Array<ArrayBuffer>, additionalData: DEVICE_SECRET_AAD as Uint8Array<ArrayBuffer> },
      key,
      sealed.subarray(12) as Uint8Array<ArrayBuffer>,
    );
    return { record, deviceSecret: new Uint8Array(plain) };
  } catch {
    throw new ChatError("WRONG_PASSWORD", `wrong password for ${username}`);
  }
}
