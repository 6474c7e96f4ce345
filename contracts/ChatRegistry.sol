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
/// Full public keys live only in calldata and events, from which the whole history can be rebuilt.
/// Typed data follows EIP-712 (https://eips.ethereum.org/EIPS/eip-712) with the type strings of
/// protocol/eip712.ts; the domain (name "ChatRegistry", version "1", chain id, this address) is
/// published through EIP-5267 `eip712Domain()`. Signatures are EIP-2098 compact (r, vs), recovered with
/// OpenZeppelin's ECDSA, which rejects malleable high-s signatures (EIP-2).
contract ChatRegistry is IChatRegistry, AccessControl, EIP712 {
    /// @notice The role allowed to submit `register` and `resetKey` (granted and revoked by the admin).
    bytes32 public constant RELAYER_ROLE = keccak256("RELAYER_ROLE");

    /// @dev EIP-712 type hashes; the strings must equal protocol/eip712.ts byte for byte.
    bytes32 private constant _REGISTER_TYPEHASH =
        keccak256("Register(string username,bytes32 credentialHash,bytes publicKey,uint256 nonce,uint256 deadline)");
    bytes32 private constant _ROTATE_KEY_TYPEHASH =
        keccak256("RotateKey(string username,bytes newPublicKey,uint256 nonce,uint256 deadline)");
    bytes32 private constant _RESET_KEY_TYPEHASH =
        keccak256("ResetKey(string username,bytes newPublicKey,uint256 nonce,uint256 deadline)");
    bytes32 private constant _UPDATE_CREDENTIAL_TYPEHASH =
        keccak256("UpdateCredential(string username,bytes32 credentialHash,uint256 nonce,uint256 deadline)");

    /// @dev Bit c is set when byte c may appear in a username: [0-9] (0x30-0x39), _ (0x5f), [a-z] (0x61-0x7a).
    /// One shift and mask per byte instead of three range comparisons.
    uint256 private constant _USERNAME_CHARSET = (((1 << 10) - 1) << 0x30) | (1 << 0x5f) | (((1 << 26) - 1) << 0x61);
    uint256 private constant _USERNAME_MIN_BYTES = 3;
    uint256 private constant _USERNAME_MAX_BYTES = 32;
    uint256 private constant _PUBLIC_KEY_BYTES = 64;

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
    constructor(address relayer) EIP712("ChatRegistry", "1") {
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
        bytes32 id = keccak256(bytes(username));
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
        (bytes32 id, User memory user) = _loadUser(username);
        _checkDeadline(deadline);
        bytes32 keyHash = _publicKeyHash(newPublicKey);
        address newKey = _addressOf(keyHash);
        if (newKey == user.key) revert ChatRegistryKeyUnchanged(newKey);
        bytes32 digest = _hashTypedDataV4(
            keccak256(abi.encode(_ROTATE_KEY_TYPEHASH, id, keyHash, uint256(user.nonce), deadline))
        );
        // Only the current key authorises a change (whoever submits); the new key proves possession.
        _checkSigner(digest, currentKeySignature, user.key);
        _checkSigner(digest, newKeySignature, newKey);

        uint256 index = _appendKey(id, user, newKey, KeyKind.Rotated);

        emit KeyRotated(id, index, newPublicKey);
    }

    /// @inheritdoc IChatRegistry
    function resetKey(
        string calldata username,
        bytes calldata newPublicKey,
        uint256 deadline,
        bytes32[2] calldata newKeySignature
    ) external {
        _checkRelayer();
        (bytes32 id, User memory user) = _loadUser(username);
        _checkDeadline(deadline);
        bytes32 keyHash = _publicKeyHash(newPublicKey);
        address newKey = _addressOf(keyHash);
        // A "reset" to the same key would warn every peer for nothing.
        if (newKey == user.key) revert ChatRegistryKeyUnchanged(newKey);
        bytes32 digest = _hashTypedDataV4(
            keccak256(abi.encode(_RESET_KEY_TYPEHASH, id, keyHash, uint256(user.nonce), deadline))
        );
        _checkSigner(digest, newKeySignature, newKey);

        uint256 index = _appendKey(id, user, newKey, KeyKind.Reset);

        emit KeyReset(id, index, newPublicKey);
    }

    /// @inheritdoc IChatRegistry
    function updateCredential(
        string calldata username,
        bytes32 credentialHash_,
        uint256 deadline,
        bytes32[2] calldata signature
    ) external {
        (bytes32 id, User memory user) = _loadUser(username);
        _checkDeadline(deadline);
        _checkCredentialHash(credentialHash_);
        bytes32 digest = _hashTypedDataV4(
            keccak256(abi.encode(_UPDATE_CREDENTIAL_TYPEHASH, id, credentialHash_, uint256(user.nonce), deadline))
        );
        _checkSigner(digest, signature, user.key);

        _users[id].nonce = user.nonce + 1;
        _credentials[id] = credentialHash_;

        emit CredentialUpdated(id, credentialHash_);
    }

    /// @inheritdoc IChatRegistry
    function isRegistered(string calldata username) external view returns (bool) {
        return _users[keccak256(bytes(username))].keyCount != 0;
    }

    /// @inheritdoc IChatRegistry
    /// @dev Reverts with ChatRegistryUnknownUser for an unknown username (index 0 would be ambiguous).
    function currentKey(string calldata username) external view returns (address key, uint256 index) {
        (, User memory user) = _loadUser(username);
        return (user.key, user.keyCount - 1);
    }

    /// @inheritdoc IChatRegistry
    function keyCount(string calldata username) external view returns (uint256) {
        return _users[keccak256(bytes(username))].keyCount;
    }

    /// @inheritdoc IChatRegistry
    /// @dev Reverts with ChatRegistryKeyIndexOutOfRange when `index` >= keyCount (count 0 for an unknown user).
    function keyRecord(string calldata username, uint256 index) external view returns (KeyRecord memory) {
        bytes32 id = keccak256(bytes(username));
        uint256 count = _users[id].keyCount;
        if (index >= count) revert ChatRegistryKeyIndexOutOfRange(username, index, count);
        return _keys[id][index];
    }

    /// @inheritdoc IChatRegistry
    function credentialHash(string calldata username) external view returns (bytes32) {
        return _credentials[keccak256(bytes(username))];
    }

    /// @inheritdoc IChatRegistry
    function nonces(string calldata username) external view returns (uint256) {
        return _users[keccak256(bytes(username))].nonce;
    }

    /// @inheritdoc IChatRegistry
    function isRelayer(address account) external view returns (bool) {
        return hasRole(RELAYER_ROLE, account);
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
        return keccak256(publicKey);
    }

    /// @dev The address of a key from its hash: keccak256(x || y)[12:].
    function _addressOf(bytes32 keyHash) private pure returns (address) {
        return address(uint160(uint256(keyHash)));
    }

    /// @dev The user's id and packed state; reverts with ChatRegistryUnknownUser when not registered.
    function _loadUser(string calldata username) private view returns (bytes32 id, User memory user) {
        id = keccak256(bytes(username));
        user = _users[id];
        if (user.keyCount == 0) revert ChatRegistryUnknownUser(username);
    }

    /// @dev Reverts unless the compact signature (EIP-2098) over `digest` recovers to `expected`. A malformed
    /// signature (high s, bad point) recovers to address(0) and so fails the same way.
    function _checkSigner(bytes32 digest, bytes32[2] calldata signature, address expected) private pure {
        (address recovered, , ) = ECDSA.tryRecover(digest, signature[0], signature[1]);
        if (recovered != expected) revert ChatRegistryInvalidSigner(expected, recovered);
    }

    /// @dev Appends a key record, makes it current and consumes the nonce; returns the new record's index.
    function _appendKey(bytes32 id, User memory user, address newKey, KeyKind kind) private returns (uint256 index) {
        index = user.keyCount;
        _users[id] = User({key: newKey, nonce: user.nonce + 1, keyCount: user.keyCount + 1});
        _keys[id][index] = KeyRecord({key: newKey, timestamp: uint64(block.timestamp), kind: kind});
    }
}
