// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IChatRegistry
/// @notice The on-chain source of truth for chat usernames, credential hashes and the full history of
/// each user's public keys. Every state change is authorised by an EIP-712 signature
/// (https://eips.ethereum.org/EIPS/eip-712) made by the user's key, except the reset: the password-proven
/// lost-device path, which only an authorised relayer may start (`requestReset`), which takes effect only after
/// `resetDelay()` seconds during which the current key can cancel it (`cancelReset`, or any `rotateKey`), and
/// which is recorded as a distinct kind so that peers can warn. The delay is what stops a stolen password (or a
/// hostile relay that learnt one) from silently taking an account whose owner still holds the key.
/// @dev Public keys are uncompressed secp256k1 points without the 0x04 prefix (64 bytes, x || y).
/// Signatures are EIP-2098 compact signatures (r, vs) (https://eips.ethereum.org/EIPS/eip-2098).
interface IChatRegistry {
    /// @notice How a key record came to be. `None` is the zero value and never in a key history.
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
    /// @notice A pending reset took effect (`completeReset`): the user's key was replaced after an off-chain
    /// password check and the delay (lost device).
    event KeyReset(bytes32 indexed usernameHash, uint256 index, bytes publicKey);
    /// @notice A relayer started a reset to `publicKey`; anyone may complete it from `effectiveAt` (a unix time)
    /// unless the current key cancels it first. The owner's clients watch for this event and warn.
    event ResetRequested(bytes32 indexed usernameHash, bytes publicKey, uint64 effectiveAt);
    /// @notice A pending reset to the key at `pendingKey` was dropped, by `cancelReset` or by a rotation.
    event ResetCancelled(bytes32 indexed usernameHash, address pendingKey);
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
    /// @notice The reset delay given at deployment is 0 or longer than the contract's maximum (seconds).
    error ChatRegistryInvalidResetDelay(uint256 delay);
    /// @notice A reset is already pending for this user; it takes effect at `effectiveAt`.
    error ChatRegistryResetPending(string username, uint64 effectiveAt);
    /// @notice No reset is pending for this user.
    error ChatRegistryNoPendingReset(string username);
    /// @notice The pending reset takes effect only at `effectiveAt`.
    error ChatRegistryResetNotDue(string username, uint64 effectiveAt);
    /// @notice The public key given does not belong to the pending reset's key address.
    error ChatRegistryPendingKeyMismatch(address pendingKey, address given);

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

    /// @notice Starts a reset of the user's key after a password check done off chain. Relayer only. The new key
    /// becomes current only through `completeReset`, at least `resetDelay()` seconds later; until then the
    /// current key can cancel. One reset may be pending per user. Consumes the user's nonce.
    /// @param newKeySignature compact signature by the new key over ResetKey(username, newPublicKey, nonce, deadline)
    /// (proof of possession)
    function requestReset(
        string calldata username,
        bytes calldata newPublicKey,
        uint256 deadline,
        bytes32[2] calldata newKeySignature
    ) external;

    /// @notice Drops the user's pending reset. Anyone may submit it. Consumes the user's nonce.
    /// @param signature compact signature by the current key over CancelReset(username, nonce, deadline)
    function cancelReset(string calldata username, uint256 deadline, bytes32[2] calldata signature) external;

    /// @notice Makes the pending reset's key current, once its delay has passed. Anyone may submit it.
    /// @param publicKey the full public key of the pending reset (the contract stores only its address; the
    /// KeyReset event carries the full key so that the history can be rebuilt from logs)
    function completeReset(string calldata username, bytes calldata publicKey) external;

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
    /// @notice Whether `account` may submit `register` and `requestReset`.
    function isRelayer(address account) external view returns (bool);
    /// @notice The user's pending reset: the new key's address and the unix time from which it may be completed
    /// (both zero when none is pending, and for an unknown user).
    function pendingReset(string calldata username) external view returns (address key, uint64 effectiveAt);
    /// @notice Seconds between `requestReset` and the earliest `completeReset`, fixed at deployment.
    function resetDelay() external view returns (uint64);
}
