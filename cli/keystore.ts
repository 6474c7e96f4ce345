/**
 * Identity keys on this device: secp256k1 keys, each in a JSON keystore version 3 (Web3 Secret Storage
 * definition: scrypt KDF, AES-128-CTR, keccak256 MAC) encrypted with the user's password, one file per key
 * index in users/<name>/keys/. Older keys stay so that messages still sealed to them can be read.
 * scrypt parameters: ethers' defaults N=2^17, r=8, p=1; N=2^10 only under CHAT_INSECURE_FAST_KDF=1 (tests).
 *
 * ethers writes the cipher section under `Crypto`, but the definition names it `crypto` and some readers
 * (web3.js) match it case-sensitively and reject `Crypto`; so the file is written with `crypto`. Reading
 * accepts either spelling (ethers looks keys up case-insensitively), so files written by older versions
 * of chat, or by ethers directly, still open.
 */
import { Wallet, decryptKeystoreJson, encryptKeystoreJson, type KeystoreAccount } from "ethers";
import { ChatError } from "../protocol/errors";
import { publicKeyOf, publicKeyToAddress } from "../protocol/keys";
import type { UnlockedKey } from "../client-core/device-store";
import type { Home } from "./home";
import { toWeb3SecretStorage, type LocalKey } from "../protocol/web3-keystore";

// Kept importable from here for existing callers; the browser client shares the same function.
export { toWeb3SecretStorage };
export type { LocalKey };


export interface IdentityFile {
  username: string;
  keys: LocalKey[];
}

export type { UnlockedKey } from "../client-core/device-store";

function identityPath(home: Home, username: string): string {
  return `${home.userDir(username)}/identity.json`;
}

function keystorePath(home: Home, username: string, index: number): string {
  return `${home.userDir(username, "keys")}/${index}.json`;
}

export function readIdentity(home: Home, username: string): IdentityFile {
  return home.readJson<IdentityFile>(identityPath(home, username)) ?? { username, keys: [] };
}

export function localKey(home: Home, username: string, index: number): LocalKey | undefined {
  return readIdentity(home, username).keys.find((key) => key.index === index && !key.pending);
}

/** Encrypts `privateKey` with the password and records it as the user's key `index`. */
export async function storeKey(params: {
  home: Home;
  username: string;
  index: number;
  privateKey: string;
  password: string;
  fastKdf: boolean;
  pending: boolean;
}): Promise<LocalKey> {
  const { home, username, index } = params;
  const publicKey = publicKeyOf(params.privateKey);
  const account: KeystoreAccount = { address: publicKeyToAddress(publicKey), privateKey: params.privateKey };
  const json = await encryptKeystoreJson(account, params.password.normalize("NFC"), params.fastKdf ? { scrypt: { N: 1 << 10 } } : {});
  home.writeJson(keystorePath(home, username, index), toWeb3SecretStorage(JSON.parse(json) as Record<string, unknown>));
  const identity = readIdentity(home, username);
  const key: LocalKey = { index, publicKey, address: account.address, createdAt: Date.now(), ...(params.pending ? { pending: true } : {}) };
  identity.keys = [...identity.keys.filter((k) => k.index !== index), key].sort((a, b) => a.index - b.index);
  home.writeJson(identityPath(home, username), identity);
  return key;
}

/** Marks key `index` as on chain. */
export function confirmKey(home: Home, username: string, index: number): void {
  const identity = readIdentity(home, username);
  identity.keys = identity.keys.map((k) => (k.index === index ? { ...k, pending: undefined } : k));
  home.writeJson(identityPath(home, username), identity);
}

/** Forgets a key that never reached the chain. */
export function dropPendingKey(home: Home, username: string, index: number): void {
  const identity = readIdentity(home, username);
  if (!identity.keys.some((k) => k.index === index && k.pending)) return;
  identity.keys = identity.keys.filter((k) => k.index !== index);
  home.writeJson(identityPath(home, username), identity);
  home.remove(keystorePath(home, username, index));
}

/** Decrypts key `index` of `username`; WRONG_PASSWORD when the password does not open it. */
export async function unlockKey(params: { home: Home; username: string; index: number; password: string }): Promise<UnlockedKey> {
  const file = keystorePath(params.home, params.username, params.index);
  const json = params.home.readJson<unknown>(file);
  if (!json) {
    throw new ChatError("NO_LOCAL_KEY", `no key ${params.index} of ${params.username} on this device (${params.home.root}); on a new device use: chat reset ${params.username}`);
  }
  let account: KeystoreAccount;
  try {
    account = await decryptKeystoreJson(JSON.stringify(json), params.password.normalize("NFC"));
  } catch (error) {
    if (/incorrect password/.test((error as Error).message)) throw new ChatError("WRONG_PASSWORD", `wrong password for ${params.username}`);
    throw new ChatError("BAD_REQUEST", `the keystore ${file} is damaged`);
  }
  return { index: params.index, privateKey: account.privateKey };
}

/** A fresh identity key from the system's CSPRNG. */
export function newPrivateKey(): string {
  return Wallet.createRandom().privateKey;
}
