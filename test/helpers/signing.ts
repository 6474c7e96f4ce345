/**
 * The EIP-712 signing helpers every kind of test uses (contract, relay, reliability, bench): users sign
 * registrations, rotations, resets and credential updates the way the client does.
 */
export * from "../contract/signing";
