// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ChatRegistry} from "../ChatRegistry.sol";

/// @title LookalikeRegistry (tests only, never deploy)
/// @notice What a hostile relay operator could deploy and name as "the" registry: ChatRegistry's whole ABI and
/// behaviour, plus an admin-only key setter. It announces a key that no signature approved with the same
/// `KeyRotated` event a relay's cache and a client's history trust. The client must refuse it because its
/// runtime code is not ChatRegistry's, whatever its ABI says.
contract LookalikeRegistry is ChatRegistry {
    constructor(address relayer, uint64 resetDelay_) ChatRegistry(relayer, resetDelay_) {}

    /// @notice The backdoor: the admin announces `publicKey` as `username`'s key at `index`, unsigned.
    function adminSetKey(string calldata username, uint256 index, bytes calldata publicKey) external onlyRole(DEFAULT_ADMIN_ROLE) {
        emit KeyRotated(keccak256(bytes(username)), index, publicKey);
    }
}
