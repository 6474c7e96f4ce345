// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IChatRegistry
/// @notice The on-chain source of truth for chat usernames, credential hashes and the full history of
/// each user's public keys. Every state change is authorised by an EIP-712 signature
/// (https://eips.ethereum.org/EIPS/eip-712) made by the user's key, except `resetKey`, the
/// password-proven lost-device path that only an authorised relayer may submit and that is recorded
/// as a distinct kind so that peers can warn.
/// @dev Public keys are uncompressed secp256k1 points without the 0x04 prefix (64 bytes, x || y).
/// Signatures are EIP-2098 compact signatures (r, vs) (https://eips.ethereum.org/EIPS/eip-2098).
interface IChatRegistry {
    /// @notice How a key record came to be. `None` is the zero value and never stored.
    enum KeyKind {
        None,
        Registered,
        Rotated,
        Reset
    }

    /// @notice One entry of a user's key history, packed into a single storage slot.
    /// @param key the Ethereum address of the public key (keccak256(x || y)[12:])
    /// @param timestamp the block timestamp at which the record was appended
    /// @param kind how the record came to be
    struct KeyRecord {
        address key;
        uint64 timestamp;
        KeyKind kind;
    }

    /// @notice A username was registered with its first key (index 0).
    event UserRegistered(bytes32 indexed usernameHash, string username, bytes32 credentialHash, bytes publicKey);
    /// @notice The user replaced its key, authorised by a signature of its previous key.
    event KeyRotated(bytes32 indexed usernameHash, uint256 index, bytes publicKey);
    /// @notice A relayer replaced the user's key after an off-chain password check (lost device).
    event KeyReset(bytes32 indexed usernameHash, uint256 index, bytes publicKey);
    /// @notice The user's credential hash changed (a password change), authorised by its current key.
    event CredentialUpdated(bytes32 indexed usernameHash, bytes32 credentialHash);

    /// @notice The username breaks the rule: 3 to 32 bytes of [a-z0-9_].
    error ChatRegistryInvalidUsername(string username);
    /// @notice The username is already registered.
    error ChatRegistryUsernameTaken(string username);
    /// @notice No user has this username.
    error ChatRegistryUnknownUser(string username);
    /// @notice The public key is not 64 bytes.
    error ChatRegistryInvalidPublicKey(uint256 length);
    /// @notice The credential hash is zero.
    error ChatRegistryInvalidCredentialHash();
    /// @notice A signature was not made by the expected key.
    error ChatRegistryInvalidSigner(address expected, address recovered);
    /// @notice The signature's deadline has passed.
    error ChatRegistryExpiredSignature(uint256 deadline);
    /// @notice The caller is not an authorised relayer.
    error ChatRegistryUnauthorizedRelayer(address caller);
    /// @notice The new key equals the current key.
    error ChatRegistryKeyUnchanged(address key);
    /// @notice No key record at this index.
    error ChatRegistryKeyIndexOutOfRange(string username, uint256 index, uint256 count);

    /// @notice Registers `username` with its first key. Relayer only.
    /// @param signature the compact signature (r, vs) by `publicKey` over
    /// Register(username, credentialHash, publicKey, nonce, deadline)
    function register(
        string calldata username,
        bytes32 credentialHash,
        bytes calldata publicKey,
        uint256 deadline,
        bytes32[2] calldata signature
    ) external;

    /// @notice Replaces the user's key. Anyone may submit it.
    /// @param currentKeySignature compact signature by the current key over
    /// RotateKey(username, newPublicKey, nonce, deadline)
    /// @param newKeySignature compact signature by the new key over the same message (proof of possession)
    function rotateKey(
        string calldata username,
        bytes calldata newPublicKey,
        uint256 deadline,
        bytes32[2] calldata currentKeySignature,
        bytes32[2] calldata newKeySignature
    ) external;

    /// @notice Replaces the user's key after a password check done off chain. Relayer only.
    /// @param newKeySignature compact signature by the new key over ResetKey(username, newPublicKey, nonce, deadline)
    function resetKey(
        string calldata username,
        bytes calldata newPublicKey,
        uint256 deadline,
        bytes32[2] calldata newKeySignature
    ) external;

    /// @notice Replaces the credential hash (a password change). Anyone may submit it.
    /// @param signature compact signature by the current key over
    /// UpdateCredential(username, credentialHash, nonce, deadline)
    function updateCredential(
        string calldata username,
        bytes32 credentialHash,
        uint256 deadline,
        bytes32[2] calldata signature
    ) external;

    /// @notice Whether `username` is registered.
    function isRegistered(string calldata username) external view returns (bool);
    /// @notice The address of the user's current key and its index in the history.
    function currentKey(string calldata username) external view returns (address key, uint256 index);
    /// @notice The number of key records of the user (0 when unknown).
    function keyCount(string calldata username) external view returns (uint256);
    /// @notice The `index`-th key record of the user, oldest first.
    function keyRecord(string calldata username, uint256 index) external view returns (KeyRecord memory);
    /// @notice The user's credential hash (zero when unknown).
    function credentialHash(string calldata username) external view returns (bytes32);
    /// @notice The nonce the user's next signature must carry (0 before registration).
    function nonces(string calldata username) external view returns (uint256);
    /// @notice Whether `account` may submit `register` and `resetKey`.
    function isRelayer(address account) external view returns (bool);
}
