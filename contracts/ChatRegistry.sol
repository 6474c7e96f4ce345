// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IChatRegistry} from "./interfaces/IChatRegistry.sol";

/// @title ChatRegistry
/// @notice The on-chain source of truth for chat usernames, credential hashes and key histories.
/// @dev Storage is laid out for gas: a user is keyed by keccak256(username) and holds one packed slot
/// (current key address, nonce, key count), one slot for the credential hash and one slot per key record.
/// A pending reset lives in the slot of the NEXT key record (index keyCount), with kind None and the time it
/// takes effect as its timestamp: no key record is ever read past keyCount, completing a reset overwrites the
/// slot with its record (a cheap non-zero to non-zero write), and a rotation, which writes that slot anyway,
/// sees and drops a pending reset for about 260 gas instead of the 2,100 of a cold read of a separate slot.
/// Full public keys live only in calldata and events, from which the whole history can be rebuilt.
/// Typed data follows EIP-712 (https://eips.ethereum.org/EIPS/eip-712) with the type strings of
/// protocol/eip712.ts; the domain (name "ChatRegistry", version "1", chain id, this address) is
/// published through EIP-5267 `eip712Domain()`. Signatures are EIP-2098 compact (r, vs), recovered with
/// OpenZeppelin's ECDSA, which rejects malleable high-s signatures (EIP-2).
contract ChatRegistry is IChatRegistry, AccessControl, EIP712 {
    /// @notice The role allowed to submit `register` and `requestReset` (granted and revoked by the admin).
    bytes32 public constant RELAYER_ROLE = keccak256("RELAYER_ROLE");

    /// @dev EIP-712 type hashes; the strings must equal protocol/eip712.ts byte for byte.
    bytes32 private constant _REGISTER_TYPEHASH =
        keccak256("Register(string username,bytes32 credentialHash,bytes publicKey,uint256 nonce,uint256 deadline)");
    bytes32 private constant _ROTATE_KEY_TYPEHASH =
        keccak256("RotateKey(string username,bytes newPublicKey,uint256 nonce,uint256 deadline)");
    bytes32 private constant _RESET_KEY_TYPEHASH =
        keccak256("ResetKey(string username,bytes newPublicKey,uint256 nonce,uint256 deadline)");
    bytes32 private constant _CANCEL_RESET_TYPEHASH = keccak256("CancelReset(string username,uint256 nonce,uint256 deadline)");
    bytes32 private constant _UPDATE_CREDENTIAL_TYPEHASH =
        keccak256("UpdateCredential(string username,bytes32 credentialHash,uint256 nonce,uint256 deadline)");

    /// @dev Bit c is set when byte c may appear in a username: [0-9] (0x30-0x39), _ (0x5f), [a-z] (0x61-0x7a).
    /// One shift and mask per byte instead of three range comparisons.
    uint256 private constant _USERNAME_CHARSET = (((1 << 10) - 1) << 0x30) | (1 << 0x5f) | (((1 << 26) - 1) << 0x61);
    uint256 private constant _USERNAME_MIN_BYTES = 3;
    uint256 private constant _USERNAME_MAX_BYTES = 32;
    uint256 private constant _PUBLIC_KEY_BYTES = 64;
    /// @dev The longest reset delay accepted at deployment. It catches a delay given in milliseconds (24 h would
    /// be 1000 days) and keeps block.timestamp + delay far inside uint64.
    uint64 private constant _MAX_RESET_DELAY = 30 days;

    /// @inheritdoc IChatRegistry
    uint64 public immutable resetDelay;

    /// @dev Exactly one storage slot (20 + 8 + 4 bytes): every operation reads and writes it once.
    struct User {
        address key;
        uint64 nonce;
        uint32 keyCount;
    }

    mapping(bytes32 usernameHash => User) private _users;
    mapping(bytes32 usernameHash => bytes32) private _credentials;
    mapping(bytes32 usernameHash => mapping(uint256 index => KeyRecord)) private _keys;

    /// @notice Deploys the registry: the deployer becomes admin and `relayer` may submit registrations and resets.
    /// @param relayer the first authorised relayer (the relay's gas-paying account)
    /// @param resetDelay_ seconds from `requestReset` to the earliest `completeReset`, 1 to 30 days' worth. It is
    /// the owner's window to notice and cancel a reset started with a stolen password, so on a public chain choose
    /// 24 to 72 hours (86400 to 259200): long enough for a person offline for a day or a weekend to see the warning,
    /// short enough that a user who really lost the device is not locked out for long. Tests use seconds and move
    /// the chain's clock.
    constructor(address relayer, uint64 resetDelay_) EIP712("ChatRegistry", "1") {
        if (resetDelay_ == 0 || resetDelay_ > _MAX_RESET_DELAY) revert ChatRegistryInvalidResetDelay(resetDelay_);
        resetDelay = resetDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, msg.sender);
        _grantRole(RELAYER_ROLE, relayer);
    }

    /// @inheritdoc IChatRegistry
    function register(
        string calldata username,
        bytes32 credentialHash_,
        bytes calldata publicKey,
        uint256 deadline,
        bytes32[2] calldata signature
    ) external {
        _checkRelayer();
        _checkUsername(username);
        _checkDeadline(deadline);
        _checkCredentialHash(credentialHash_);
        bytes32 keyHash = _publicKeyHash(publicKey);
        bytes32 id = _usernameHash(username);
        if (_users[id].keyCount != 0) revert ChatRegistryUsernameTaken(username);
        address key = _addressOf(keyHash);
        // The nonce of an unregistered user is 0; the signature proves possession of `publicKey`.
        bytes32 digest = _hashTypedDataV4(
            keccak256(abi.encode(_REGISTER_TYPEHASH, id, credentialHash_, keyHash, uint256(0), deadline))
        );
        _checkSigner(digest, signature, key);

        _users[id] = User({key: key, nonce: 1, keyCount: 1});
        _credentials[id] = credentialHash_;
        _keys[id][0] = KeyRecord({key: key, timestamp: uint64(block.timestamp), kind: KeyKind.Registered});

        emit UserRegistered(id, username, credentialHash_, publicKey);
    }

    /// @inheritdoc IChatRegistry
    function rotateKey(
        string calldata username,
        bytes calldata newPublicKey,
        uint256 deadline,
        bytes32[2] calldata currentKeySignature,
        bytes32[2] calldata newKeySignature
    ) external {
        (bytes32 id, address key, uint64 nonce, uint32 count) = _loadUser(username);
        _checkDeadline(deadline);
        bytes32 keyHash = _publicKeyHash(newPublicKey);
        address newKey = _addressOf(keyHash);
        if (newKey == key) revert ChatRegistryKeyUnchanged(newKey);
        bytes32 digest = _hashTypedDataV4(_hashStruct(_ROTATE_KEY_TYPEHASH, id, keyHash, nonce, deadline));
        // Only the current key authorises a change (whoever submits); the new key proves possession.
        _checkSigner(digest, currentKeySignature, key);
        _checkSigner(digest, newKeySignature, newKey);

        // The current key acting is the best proof that the owner still holds it, so a rotation drops any pending
        // reset (rather than being refused by it: a reset started with a stolen password must not stop the owner
        // from moving to a new key). The record slot read here is the one _appendKey writes next, already warm.
        address pendingKey = _keys[id][count].key;
        if (pendingKey != address(0)) emit ResetCancelled(id, pendingKey);
        _appendKey(id, newKey, nonce, count, KeyKind.Rotated);

        emit KeyRotated(id, count, newPublicKey);
    }

    /// @inheritdoc IChatRegistry
    function requestReset(
        string calldata username,
        bytes calldata newPublicKey,
        uint256 deadline,
        bytes32[2] calldata newKeySignature
    ) external {
        _checkRelayer();
        (bytes32 id, address key, uint64 nonce, uint32 count) = _loadUser(username);
        _checkDeadline(deadline);
        bytes32 keyHash = _publicKeyHash(newPublicKey);
        address newKey = _addressOf(keyHash);
        // A "reset" to the same key would warn every peer for nothing.
        if (newKey == key) revert ChatRegistryKeyUnchanged(newKey);
        KeyRecord storage pending = _keys[id][count];
        // One at a time: a second request would restart or replace the owner's window to cancel.
        if (pending.key != address(0)) revert ChatRegistryResetPending(username, pending.timestamp);
        bytes32 digest = _hashTypedDataV4(_hashStruct(_RESET_KEY_TYPEHASH, id, keyHash, nonce, deadline));
        _checkSigner(digest, newKeySignature, newKey);

        // Checked: cannot overflow (the delay is at most 30 days), but a wrap would make the reset due at once.
        uint64 effectiveAt = uint64(block.timestamp) + resetDelay;
        _users[id].nonce = nonce + 1;
        _writeRecord(pending, newKey, effectiveAt, KeyKind.None);

        emit ResetRequested(id, newPublicKey, effectiveAt);
    }

    /// @inheritdoc IChatRegistry
    /// @dev Allowed until the reset is completed, even past its effective time: a live current key is the strongest
    /// evidence against the reset, and the requester could have completed it already.
    function cancelReset(string calldata username, uint256 deadline, bytes32[2] calldata signature) external {
        (bytes32 id, address key, uint64 nonce, uint32 count) = _loadUser(username);
        _checkDeadline(deadline);
        KeyRecord storage pending = _keys[id][count];
        address pendingKey = pending.key;
        if (pendingKey == address(0)) revert ChatRegistryNoPendingReset(username);
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(_CANCEL_RESET_TYPEHASH, id, nonce, deadline)));
        _checkSigner(digest, signature, key);

        _users[id].nonce = nonce + 1;
        delete _keys[id][count];

        emit ResetCancelled(id, pendingKey);
    }

    /// @inheritdoc IChatRegistry
    function completeReset(string calldata username, bytes calldata publicKey) external {
        (bytes32 id, , uint64 nonce, uint32 count) = _loadUser(username);
        KeyRecord storage pending = _keys[id][count];
        (address pendingKey, uint64 effectiveAt) = (pending.key, pending.timestamp);
        if (pendingKey == address(0)) revert ChatRegistryNoPendingReset(username);
        if (block.timestamp < effectiveAt) revert ChatRegistryResetNotDue(username, effectiveAt);
        address given = _addressOf(_publicKeyHash(publicKey));
        if (given != pendingKey) revert ChatRegistryPendingKeyMismatch(pendingKey, given);

        // Overwrites the pending entry with the reset record. The new key differs from the current one: it did at
        // the request, and any key change since (a rotation) dropped the pending reset.
        _appendKey(id, pendingKey, nonce, count, KeyKind.Reset);

        emit KeyReset(id, count, publicKey);
    }

    /// @inheritdoc IChatRegistry
    function updateCredential(
        string calldata username,
        bytes32 credentialHash_,
        uint256 deadline,
        bytes32[2] calldata signature
    ) external {
        (bytes32 id, address key, uint64 nonce, ) = _loadUser(username);
        _checkDeadline(deadline);
        _checkCredentialHash(credentialHash_);
        bytes32 digest = _hashTypedDataV4(
            _hashStruct(_UPDATE_CREDENTIAL_TYPEHASH, id, credentialHash_, nonce, deadline)
        );
        _checkSigner(digest, signature, key);

        _users[id].nonce = nonce + 1;
        _credentials[id] = credentialHash_;

        emit CredentialUpdated(id, credentialHash_);
    }

    /// @inheritdoc IChatRegistry
    function isRegistered(string calldata username) external view returns (bool) {
        return _users[_usernameHash(username)].keyCount != 0;
    }

    /// @inheritdoc IChatRegistry
    /// @dev Reverts with ChatRegistryUnknownUser for an unknown username (index 0 would be ambiguous).
    function currentKey(string calldata username) external view returns (address key, uint256 index) {
        uint32 count;
        (, key, , count) = _loadUser(username);
        index = count - 1;
    }

    /// @inheritdoc IChatRegistry
    function keyCount(string calldata username) external view returns (uint256) {
        return _users[_usernameHash(username)].keyCount;
    }

    /// @inheritdoc IChatRegistry
    /// @dev Reverts with ChatRegistryKeyIndexOutOfRange when `index` >= keyCount (count 0 for an unknown user).
    function keyRecord(string calldata username, uint256 index) external view returns (KeyRecord memory) {
        bytes32 id = _usernameHash(username);
        uint256 count = _users[id].keyCount;
        if (index >= count) revert ChatRegistryKeyIndexOutOfRange(username, index, count);
        return _keys[id][index];
    }

    /// @inheritdoc IChatRegistry
    function credentialHash(string calldata username) external view returns (bytes32) {
        return _credentials[_usernameHash(username)];
    }

    /// @inheritdoc IChatRegistry
    function nonces(string calldata username) external view returns (uint256) {
        return _users[_usernameHash(username)].nonce;
    }

    /// @inheritdoc IChatRegistry
    function isRelayer(address account) external view returns (bool) {
        return hasRole(RELAYER_ROLE, account);
    }

    /// @inheritdoc IChatRegistry
    function pendingReset(string calldata username) external view returns (address key, uint64 effectiveAt) {
        bytes32 id = _usernameHash(username);
        KeyRecord storage pending = _keys[id][_users[id].keyCount];
        (key, effectiveAt) = (pending.key, pending.timestamp);
    }

    /// @notice ERC-165: AccessControl's interfaces plus IChatRegistry.
    /// @param interfaceId the ERC-165 interface identifier
    /// @return whether this contract implements `interfaceId`
    function supportsInterface(bytes4 interfaceId) public view override returns (bool) {
        return interfaceId == type(IChatRegistry).interfaceId || super.supportsInterface(interfaceId);
    }

    /// @dev Reverts unless the caller holds RELAYER_ROLE.
    function _checkRelayer() private view {
        if (!hasRole(RELAYER_ROLE, msg.sender)) revert ChatRegistryUnauthorizedRelayer(msg.sender);
    }

    /// @dev The username rule of protocol/username.ts: 3 to 32 bytes of [a-z0-9_].
    function _checkUsername(string calldata username) private pure {
        uint256 length = bytes(username).length;
        if (length < _USERNAME_MIN_BYTES || length > _USERNAME_MAX_BYTES) {
            revert ChatRegistryInvalidUsername(username);
        }
        // At most 32 bytes: one calldata word holds them all (bytes past the end of calldata read as zero).
        bytes32 word;
        assembly ("memory-safe") {
            word := calldataload(username.offset)
        }
        for (uint256 i; i < length; ++i) {
            if ((_USERNAME_CHARSET >> uint8(word[i])) & 1 == 0) revert ChatRegistryInvalidUsername(username);
        }
    }

    /// @dev Reverts once the block time is past `deadline` (a signature is valid up to and including it).
    function _checkDeadline(uint256 deadline) private view {
        if (block.timestamp > deadline) revert ChatRegistryExpiredSignature(deadline);
    }

    /// @dev A zero credential hash would mean "no password"; refuse it.
    function _checkCredentialHash(bytes32 hash) private pure {
        if (hash == bytes32(0)) revert ChatRegistryInvalidCredentialHash();
    }

    /// @dev keccak256 of a 64-byte public key (x || y): both the EIP-712 `bytes` member encoding and,
    /// in its low 20 bytes, the key's Ethereum address (yellow paper, eq. 284).
    function _publicKeyHash(bytes calldata publicKey) private pure returns (bytes32) {
        if (publicKey.length != _PUBLIC_KEY_BYTES) revert ChatRegistryInvalidPublicKey(publicKey.length);
        bytes32 hash;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, publicKey.offset, 64)
            hash := keccak256(ptr, 64)
        }
        return hash;
    }

    /// @dev The address of a key from its hash: keccak256(x || y)[12:].
    function _addressOf(bytes32 keyHash) private pure returns (address) {
        return address(uint160(uint256(keyHash)));
    }

    /// @dev The user's id and unpacked state, from one SLOAD onto the stack; reverts with ChatRegistryUnknownUser
    /// when not registered.
    function _loadUser(
        string calldata username
    ) private view returns (bytes32 id, address key, uint64 nonce, uint32 count) {
        id = _usernameHash(username);
        User storage user = _users[id];
        (key, nonce, count) = (user.key, user.nonce, user.keyCount);
        if (count == 0) revert ChatRegistryUnknownUser(username);
    }

    /// @dev keccak256(username), hashed in scratch memory past the free pointer (no allocation: the bytes are
    /// not needed afterwards). It keys storage and is also the EIP-712 encoding of the `string` member.
    function _usernameHash(string calldata username) private pure returns (bytes32 id) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, username.offset, username.length)
            id := keccak256(ptr, username.length)
        }
    }

    /// @dev Reverts unless the compact signature (EIP-2098) over `digest` recovers to `expected`. A malformed
    /// signature (high s, bad point) recovers to address(0) and so fails the same way.
    function _checkSigner(bytes32 digest, bytes32[2] calldata signature, address expected) private pure {
        (address recovered, , ) = ECDSA.tryRecover(digest, signature[0], signature[1]);
        if (recovered != expected) revert ChatRegistryInvalidSigner(expected, recovered);
    }

    /// @dev hashStruct of a four-member EIP-712 message (string/bytes members already hashed), in scratch
    /// memory: keccak256(typeHash || a || b || nonce || deadline).
    function _hashStruct(
        bytes32 typeHash,
        bytes32 a,
        bytes32 b,
        uint256 nonce,
        uint256 deadline
    ) private pure returns (bytes32 hash) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), a)
            mstore(add(ptr, 0x40), b)
            mstore(add(ptr, 0x60), nonce)
            mstore(add(ptr, 0x80), deadline)
            hash := keccak256(ptr, 0xa0)
        }
    }

    /// @dev Appends key record `count` (kind `kind`), makes `newKey` current and consumes the nonce. Each slot is
    /// written whole with one SSTORE, in Solidity's own packing order (first member in the low bytes), so the
    /// getters read it back unchanged. The increments are checked (a panic, never a wrap into the next field).
    function _appendKey(bytes32 id, address newKey, uint64 nonce, uint32 count, KeyKind kind) private {
        uint64 nextNonce = nonce + 1;
        uint32 nextCount = count + 1;
        User storage user = _users[id];
        // Inline assembly sees the full 256-bit stack words, whose bits above a short type may be dirty:
        // widen each member through uint256 first, so that Solidity cleans it.
        uint256 userWord = uint256(uint160(newKey)) | (uint256(nextNonce) << 160) | (uint256(nextCount) << 224);
        assembly ("memory-safe") {
            sstore(user.slot, userWord)
        }
        _writeRecord(_keys[id][count], newKey, uint64(block.timestamp), kind);
    }

    /// @dev Writes a key record slot whole with one SSTORE, in Solidity's packing order (see _appendKey).
    function _writeRecord(KeyRecord storage record, address key, uint64 timestamp, KeyKind kind) private {
        uint256 recordWord = uint256(uint160(key)) | (uint256(timestamp) << 160) | (uint256(kind) << 224);
        assembly ("memory-safe") {
            sstore(record.slot, recordWord)
        }
    }
}
