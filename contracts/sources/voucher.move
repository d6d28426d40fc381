/// Payment-channel vouchers: "up to N MIST for channel C", Ed25519-signed off-chain by the
/// channel's renter voucher key.
///
/// Signed message layout (57 bytes, identical to jupyter_walnut/ledger/vouchers.py):
///   bytes  0..17  domain tag, ASCII "walnut-voucher-v1" (no length prefix)
///   bytes 17..49  channel id: bcs(address), the channel object's id
///   bytes 49..57  cumulative amount in MIST: bcs(u64), little-endian
/// The signature is a raw 64-byte Ed25519 signature over those bytes (no intent, no hash).
module walnut::voucher;

use std::bcs;
use sui::ed25519;
use sui::hash;

const DOMAIN: vector<u8> = b"walnut-voucher-v1";
const PUBLIC_KEY_LENGTH: u64 = 32;
const SIGNATURE_LENGTH: u64 = 64;
/// Sui's signature-scheme flag for Ed25519, the first byte hashed into an address.
const ED25519_FLAG: u8 = 0;

/// The domain tag every voucher message starts with.
public fun domain(): vector<u8> { DOMAIN }

/// The exact bytes a renter signs for `cumulative_amount_mist` on `channel_id`.
public fun message(channel_id: address, cumulative_amount_mist: u64): vector<u8> {
    let mut msg = DOMAIN;
    msg.append(bcs::to_bytes(&channel_id));
    msg.append(bcs::to_bytes(&cumulative_amount_mist));
    msg
}

/// True when `signature` is `public_key`'s Ed25519 signature of the voucher message.
/// Wrong-length keys or signatures (e.g. truncated ones) are refused, never aborted on.
public fun verify(
    public_key: &vector<u8>,
    signature: &vector<u8>,
    channel_id: address,
    cumulative_amount_mist: u64,
): bool {
    if (public_key.length() != PUBLIC_KEY_LENGTH || signature.length() != SIGNATURE_LENGTH) {
        return false
    };
    ed25519::ed25519_verify(signature, public_key, &message(channel_id, cumulative_amount_mist))
}

public fun is_valid_public_key(public_key: &vector<u8>): bool {
    public_key.length() == PUBLIC_KEY_LENGTH
}

/// The Sui address of an Ed25519 public key: blake2b256(0x00 || public_key).
public fun address_of_public_key(public_key: &vector<u8>): address {
    let mut bytes = vector[ED25519_FLAG];
    bytes.append(*public_key);
    sui::address::from_bytes(hash::blake2b256(&bytes))
}
