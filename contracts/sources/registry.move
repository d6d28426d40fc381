/// The provider registry: one shared `ProviderEntry` object per provider (no global
/// registry object, so registrations never contend with each other). Renters discover
/// entries through the events below and read the current state from the objects.
module walnut::registry;

use std::string::String;
use sui::event;

// Abort codes (the same numbers as jupyter_walnut/ledger/base.py ABORT_CODES).
/// Only the entry's owner may update or retire it.
const ENotOwner: u64 = 11;
/// The entry is retired: it can no longer be changed.
const EProviderRetired: u64 = 12;
/// The TLS fingerprint is not a 32-byte SHA-256 digest.
const EBadFingerprint: u64 = 13;

const FINGERPRINT_LENGTH: u64 = 32;

public struct ProviderEntry has key {
    id: UID,
    /// The provider's address: channels name it and claims must come from it.
    owner: address,
    /// Where renters connect, e.g. "https://gpu1.example.org:8443".
    endpoint: String,
    /// SHA-256 of the provider's TLS certificate (DER): renters pin it.
    tls_fingerprint: vector<u8>,
    /// Free-form JSON: CPUs, memory, GPUs.
    specs: String,
    price_per_second_mist: u64,
    active: bool,
}

public struct ProviderRegistered has copy, drop {
    provider_id: ID,
    owner: address,
    endpoint: String,
    tls_fingerprint: vector<u8>,
    specs: String,
    price_per_second_mist: u64,
}

public struct ProviderUpdated has copy, drop {
    provider_id: ID,
    owner: address,
    endpoint: String,
    tls_fingerprint: vector<u8>,
    specs: String,
    price_per_second_mist: u64,
}

public struct ProviderRetired has copy, drop {
    provider_id: ID,
    owner: address,
}

/// Publish a new entry owned by the sender; returns its id.
public fun register(
    endpoint: String,
    tls_fingerprint: vector<u8>,
    specs: String,
    price_per_second_mist: u64,
    ctx: &mut TxContext,
): ID {
    assert!(tls_fingerprint.length() == FINGERPRINT_LENGTH, EBadFingerprint);
    let entry = ProviderEntry {
        id: object::new(ctx),
        owner: ctx.sender(),
        endpoint,
        tls_fingerprint,
        specs,
        price_per_second_mist,
        active: true,
    };
    let provider_id = object::id(&entry);
    event::emit(ProviderRegistered {
        provider_id,
        owner: entry.owner,
        endpoint: entry.endpoint,
        tls_fingerprint: entry.tls_fingerprint,
        specs: entry.specs,
        price_per_second_mist,
    });
    transfer::share_object(entry);
    provider_id
}

/// Replace every mutable field (callers pass the current value for what they keep).
public fun update(
    entry: &mut ProviderEntry,
    endpoint: String,
    tls_fingerprint: vector<u8>,
    specs: String,
    price_per_second_mist: u64,
    ctx: &TxContext,
) {
    assert!(ctx.sender() == entry.owner, ENotOwner);
    assert!(entry.active, EProviderRetired);
    assert!(tls_fingerprint.length() == FINGERPRINT_LENGTH, EBadFingerprint);
    entry.endpoint = endpoint;
    entry.tls_fingerprint = tls_fingerprint;
    entry.specs = specs;
    entry.price_per_second_mist = price_per_second_mist;
    event::emit(ProviderUpdated {
        provider_id: object::id(entry),
        owner: entry.owner,
        endpoint,
        tls_fingerprint,
        specs,
        price_per_second_mist,
    });
}

/// Take the entry off the market for good.
public fun retire(entry: &mut ProviderEntry, ctx: &TxContext) {
    assert!(ctx.sender() == entry.owner, ENotOwner);
    assert!(entry.active, EProviderRetired);
    entry.active = false;
    event::emit(ProviderRetired { provider_id: object::id(entry), owner: entry.owner });
}

public fun owner(entry: &ProviderEntry): address { entry.owner }

public fun endpoint(entry: &ProviderEntry): String { entry.endpoint }

public fun tls_fingerprint(entry: &ProviderEntry): vector<u8> { entry.tls_fingerprint }

public fun specs(entry: &ProviderEntry): String { entry.specs }

public fun price_per_second_mist(entry: &ProviderEntry): u64 { entry.price_per_second_mist }

public fun is_active(entry: &ProviderEntry): bool { entry.active }
