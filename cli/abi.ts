/**
 * The read-only part of IChatRegistry the client calls over its own JSON-RPC, as a human-readable ABI
 * so that the CLI needs neither the compiled artifacts nor typechain-types at run time.
 * test/cli/abi.test.ts checks it against the compiled interface.
 */
export const REGISTRY_READ_ABI = [
  "function isRegistered(string username) view returns (bool)",
  "function currentKey(string username) view returns (address key, uint256 index)",
  "function keyCount(string username) view returns (uint256)",
  "function keyRecord(string username, uint256 index) view returns (tuple(address key, uint64 timestamp, uint8 kind))",
  "function credentialHash(string username) view returns (bytes32)",
  "function nonces(string username) view returns (uint256)",
] as const;
