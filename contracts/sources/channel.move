/// Payment channels: a renter locks SUI for one provider, pays it off-chain with
/// cumulative vouchers (see walnut::voucher), and the provider claims the latest one.
///
/// A session costs a constant number of transactions however long it runs: `open`,
/// then `claim` + `provider_close` in one programmable transaction (or `request_close`
/// and `finalize_close` when the provider has vanished).
///
/// Invariants: `claimed` never exceeds `deposited` nor the highest voucher the renter
/// signed; at close, `deposited == claimed + refunded` exactly.
module walnut::channel;

use sui::balance::Balance;
use sui::clock::Clock;
use sui::coin::{Self, Coin};
use sui::event;
use sui::sui::SUI;
use walnut::voucher;

// Abort codes (the same numbers as jupyter_walnut/ledger/base.py ABORT_CODES).
/// Only the channel's renter may do this.
const ENotRenter: u64 = 1;
/// Only the channel's provider may do this.
const ENotProvider: u64 = 2;
/// The voucher is not signed by the channel's voucher key for this channel and amount.
const EBadSignature: u64 = 3;
/// The voucher is not above what was already claimed: it moves nothing.
const EStaleVoucher: u64 = 4;
/// The channel is closed.
const EChannelClosed: u64 = 5;
/// The renter already asked to close.
const ECloseAlreadyRequested: u64 = 6;
/// `finalize_close` before any `request_close`.
const ECloseNotRequested: u64 = 7;
/// `finalize_close` before the challenge period has passed.
const EChallengePeriodActive: u64 = 8;
/// A deposit or top-up of 0 MIST.
const EZeroAmount: u64 = 9;
/// The voucher public key is not 32 bytes.
const EBadPublicKey: u64 = 10;
/// A top-up after the renter asked to close.
const EChannelClosing: u64 = 14;
/// The voucher is higher than the deposit and all of the deposit is already claimed.
const EDepositExhausted: u64 = 15;

public struct Channel has key {
    id: UID,
    renter: address,
    provider: address,
    /// Ed25519 public key whose signatures on vouchers the channel honours.
    voucher_pubkey: vector<u8>,
    funds: Balance<SUI>,
    /// Opening deposit plus every top-up.
    deposited: u64,
    /// Paid to the provider so far: the highest voucher honoured, capped at `deposited`.
    claimed: u64,
    /// Returned to the renter at close.
    refunded: u64,
    price_per_second_mist: u64,
    challenge_period_ms: u64,
    close_requested_at_ms: Option<u64>,
    closed: bool,
}

public struct ChannelOpened has copy, drop {
    channel_id: ID,
    renter: address,
    provider: address,
    deposit: u64,
    price_per_second_mist: u64,
    challenge_period_ms: u64,
}

public struct ChannelToppedUp has copy, drop {
    channel_id: ID,
    amount: u64,
    deposited: u64,
}

public struct Claimed has copy, drop {
    channel_id: ID,
    voucher_amount: u64,
    paid: u64,
    claimed: u64,
}

public struct CloseRequested has copy, drop {
    channel_id: ID,
    requested_at_ms: u64,
    close_allowed_at_ms: u64,
}

public struct ChannelClosed has copy, drop {
    channel_id: ID,
    by_provider: bool,
    paid: u64,
    refunded: u64,
}

/// Lock `deposit` in a new shared channel from the sender to `provider`; returns its id.
public fun open(
    deposit: Coin<SUI>,
    provider: address,
    voucher_pubkey: vector<u8>,
    price_per_second_mist: u64,
    challenge_period_ms: u64,
    ctx: &mut TxContext,
): ID {
    let amount = deposit.value();
    assert!(amount > 0, EZeroAmount);
    assert!(voucher::is_valid_public_key(&voucher_pubkey), EBadPublicKey);
    let channel = Channel {
        id: object::new(ctx),
        renter: ctx.sender(),
        provider,
        voucher_pubkey,
        funds: deposit.into_balance(),
        deposited: amount,
        claimed: 0,
        refunded: 0,
        price_per_second_mist,
        challenge_period_ms,
        close_requested_at_ms: option::none(),
        closed: false,
    };
    let channel_id = object::id(&channel);
    event::emit(ChannelOpened {
        channel_id,
        renter: channel.renter,
        provider,
        deposit: amount,
        price_per_second_mist,
        challenge_period_ms,
    });
    transfer::share_object(channel);
    channel_id
}

/// Add funds; only the renter, and only while no close is pending.
public fun top_up(channel: &mut Channel, payment: Coin<SUI>, ctx: &TxContext) {
    assert!(ctx.sender() == channel.renter, ENotRenter);
    assert!(!channel.closed, EChannelClosed);
    assert!(channel.close_requested_at_ms.is_none(), EChannelClosing);
    let amount = payment.value();
    assert!(amount > 0, EZeroAmount);
    channel.deposited = channel.deposited + amount;
    channel.funds.join(payment.into_balance());
    event::emit(ChannelToppedUp {
        channel_id: object::id(channel),
        amount,
        deposited: channel.deposited,
    });
}

/// Pay the provider the increase of a renter-signed voucher over the last claim (capped at
/// the deposit); returns the MIST paid. Allowed while a close is pending, so a renter
/// cannot dodge payment by asking to close.
public fun claim(
    channel: &mut Channel,
    voucher_amount: u64,
    signature: vector<u8>,
    ctx: &mut TxContext,
): u64 {
    assert!(ctx.sender() == channel.provider, ENotProvider);
    assert!(!channel.closed, EChannelClosed);
    let channel_address = object::id_address(channel);
    assert!(
        voucher::verify(&channel.voucher_pubkey, &signature, channel_address, voucher_amount),
        EBadSignature,
    );
    settle(channel, voucher_amount, ctx)
}

/// The accounting half of `claim`, after the signature has been checked.
fun settle(channel: &mut Channel, voucher_amount: u64, ctx: &mut TxContext): u64 {
    let payable = std::u64::min(voucher_amount, channel.deposited);
    if (payable <= channel.claimed) {
        if (voucher_amount > channel.claimed) abort EDepositExhausted;
        abort EStaleVoucher
    };
    let paid = payable - channel.claimed;
    channel.claimed = payable;
    transfer::public_transfer(coin::take(&mut channel.funds, paid, ctx), channel.provider);
    event::emit(Claimed {
        channel_id: object::id(channel),
        voucher_amount,
        paid,
        claimed: payable,
    });
    paid
}

/// The provider ends the channel; everything unclaimed goes back to the renter now.
public fun provider_close(channel: &mut Channel, ctx: &mut TxContext) {
    assert!(ctx.sender() == channel.provider, ENotProvider);
    assert!(!channel.closed, EChannelClosed);
    close(channel, true, ctx);
}

/// The renter asks to close: the provider has `challenge_period_ms` to claim.
public fun request_close(channel: &mut Channel, clock: &Clock, ctx: &TxContext) {
    assert!(ctx.sender() == channel.renter, ENotRenter);
    assert!(!channel.closed, EChannelClosed);
    assert!(channel.close_requested_at_ms.is_none(), ECloseAlreadyRequested);
    let now = clock.timestamp_ms();
    channel.close_requested_at_ms = option::some(now);
    event::emit(CloseRequested {
        channel_id: object::id(channel),
        requested_at_ms: now,
        close_allowed_at_ms: now + channel.challenge_period_ms,
    });
}

/// After the challenge period, return the unclaimed rest to the renter. Anyone may call
/// it: the money can only go to the renter.
public fun finalize_close(channel: &mut Channel, clock: &Clock, ctx: &mut TxContext) {
    assert!(!channel.closed, EChannelClosed);
    assert!(channel.close_requested_at_ms.is_some(), ECloseNotRequested);
    let allowed_at = *channel.close_requested_at_ms.borrow() + channel.challenge_period_ms;
    assert!(clock.timestamp_ms() >= allowed_at, EChallengePeriodActive);
    close(channel, false, ctx);
}

fun close(channel: &mut Channel, by_provider: bool, ctx: &mut TxContext) {
    let refund = channel.funds.value();
    if (refund > 0) {
        let rest = coin::from_balance(channel.funds.withdraw_all(), ctx);
        transfer::public_transfer(rest, channel.renter);
    };
    channel.refunded = refund;
    channel.closed = true;
    event::emit(ChannelClosed {
        channel_id: object::id(channel),
        by_provider,
        paid: channel.claimed,
        refunded: refund,
    });
}

// === Reads ===

public fun renter(channel: &Channel): address { channel.renter }

public fun provider(channel: &Channel): address { channel.provider }

public fun voucher_pubkey(channel: &Channel): vector<u8> { channel.voucher_pubkey }

public fun deposited(channel: &Channel): u64 { channel.deposited }

public fun claimed(channel: &Channel): u64 { channel.claimed }

public fun refunded(channel: &Channel): u64 { channel.refunded }

/// MIST still held by the channel.
public fun locked(channel: &Channel): u64 { channel.funds.value() }

public fun price_per_second_mist(channel: &Channel): u64 { channel.price_per_second_mist }

public fun challenge_period_ms(channel: &Channel): u64 { channel.challenge_period_ms }

public fun close_requested_at_ms(channel: &Channel): Option<u64> { channel.close_requested_at_ms }

public fun is_closed(channel: &Channel): bool { channel.closed }

// === Tests ===

/// `claim` without the signature check, for accounting tests: Move tests cannot sign, and
/// a channel's id is only known once it exists. Signatures are covered by the vector tests.
#[test_only]
public fun claim_unsigned_for_testing(
    channel: &mut Channel,
    voucher_amount: u64,
    ctx: &mut TxContext,
): u64 {
    assert!(ctx.sender() == channel.provider, ENotProvider);
    assert!(!channel.closed, EChannelClosed);
    settle(channel, voucher_amount, ctx)
}
