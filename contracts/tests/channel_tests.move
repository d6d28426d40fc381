#[test_only]
module walnut::channel_tests;

use sui::clock::{Self, Clock};
use sui::coin::{Self, Coin};
use sui::sui::SUI;
use sui::test_scenario::{Self as ts, Scenario};
use walnut::channel::{Self, Channel};

const RENTER: address = @0xA11CE;
const PROVIDER: address = @0xB0B;
const STRANGER: address = @0xE5E;
const CHALLENGE_MS: u64 = 60_000;

// The "one sui" vector of test_vectors.json: a valid voucher, but for another channel.
const PUBKEY: vector<u8> = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
const OTHER_CHANNEL_SIG: vector<u8> =
    x"4166789d60326b6508967ff879b6e7e6aee5b076604e324fc01954130aa346013ff0376cc1d9b7ace525300bc8517b4302a5bd5bff60e08fa38735b6663f9701";
const OTHER_CHANNEL_AMOUNT: u64 = 1_000_000_000;

fun open_channel(scenario: &mut Scenario, deposit: u64) {
    scenario.next_tx(RENTER);
    let coin = coin::mint_for_testing<SUI>(deposit, scenario.ctx());
    channel::open(coin, PROVIDER, PUBKEY, 1, CHALLENGE_MS, scenario.ctx());
}

/// Sum of every SUI coin `owner` holds after the previous transaction.
fun holdings(scenario: &mut Scenario, owner: address): u64 {
    scenario.next_tx(owner);
    let ids = ts::ids_for_address<Coin<SUI>>(owner);
    let mut total = 0;
    let mut i = 0;
    while (i < ids.length()) {
        let coin = scenario.take_from_address_by_id<Coin<SUI>>(owner, ids[i]);
        total = total + coin.value();
        ts::return_to_address(owner, coin);
        i = i + 1;
    };
    total
}

fun claim_as(scenario: &mut Scenario, who: address, amount: u64): u64 {
    scenario.next_tx(who);
    let mut ch = scenario.take_shared<Channel>();
    let paid = ch.claim_unsigned_for_testing(amount, scenario.ctx());
    ts::return_shared(ch);
    paid
}

fun clock_at(scenario: &mut Scenario, ms: u64): Clock {
    let mut clock = clock::create_for_testing(scenario.ctx());
    clock.set_for_testing(ms);
    clock
}

#[test]
fun claims_pay_increases_and_close_refunds_the_rest() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    assert!(claim_as(&mut scenario, PROVIDER, 300) == 300, 0);
    assert!(claim_as(&mut scenario, PROVIDER, 700) == 400, 1);
    scenario.next_tx(PROVIDER);
    let mut ch = scenario.take_shared<Channel>();
    ch.provider_close(scenario.ctx());
    assert!(ch.is_closed(), 2);
    assert!(ch.claimed() == 700 && ch.refunded() == 300 && ch.locked() == 0, 3);
    assert!(ch.deposited() == ch.claimed() + ch.refunded(), 4);
    ts::return_shared(ch);
    assert!(holdings(&mut scenario, PROVIDER) == 700, 5);
    assert!(holdings(&mut scenario, RENTER) == 300, 6);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EStaleVoucher)]
fun replayed_voucher_moves_nothing() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    claim_as(&mut scenario, PROVIDER, 300);
    claim_as(&mut scenario, PROVIDER, 300);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EStaleVoucher)]
fun older_voucher_moves_nothing() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    claim_as(&mut scenario, PROVIDER, 300);
    claim_as(&mut scenario, PROVIDER, 200);
    scenario.end();
}

#[test]
fun voucher_above_deposit_pays_at_most_the_deposit() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 500);
    assert!(claim_as(&mut scenario, PROVIDER, 10_000) == 500, 0);
    assert!(holdings(&mut scenario, PROVIDER) == 500, 1);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EDepositExhausted)]
fun exhausted_deposit_refuses_higher_voucher() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 500);
    claim_as(&mut scenario, PROVIDER, 10_000);
    claim_as(&mut scenario, PROVIDER, 20_000);
    scenario.end();
}

#[test]
fun top_up_lets_the_same_voucher_pay_the_rest() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 500);
    claim_as(&mut scenario, PROVIDER, 800);
    scenario.next_tx(RENTER);
    let mut ch = scenario.take_shared<Channel>();
    ch.top_up(coin::mint_for_testing<SUI>(500, scenario.ctx()), scenario.ctx());
    assert!(ch.deposited() == 1000, 0);
    ts::return_shared(ch);
    assert!(claim_as(&mut scenario, PROVIDER, 800) == 300, 1);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::ENotProvider)]
fun stranger_cannot_claim() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    claim_as(&mut scenario, STRANGER, 300);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EBadSignature)]
fun garbage_signature_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(PROVIDER);
    let mut ch = scenario.take_shared<Channel>();
    ch.claim(300, vector[1, 2, 3], scenario.ctx());
    ts::return_shared(ch);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EBadSignature)]
fun voucher_for_another_channel_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(PROVIDER);
    let mut ch = scenario.take_shared<Channel>();
    ch.claim(OTHER_CHANNEL_AMOUNT, OTHER_CHANNEL_SIG, scenario.ctx());
    ts::return_shared(ch);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EZeroAmount)]
fun zero_deposit_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 0);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EBadPublicKey)]
fun short_voucher_key_is_refused() {
    let mut scenario = ts::begin(RENTER);
    let coin = coin::mint_for_testing<SUI>(10, scenario.ctx());
    channel::open(coin, PROVIDER, x"0102", 1, CHALLENGE_MS, scenario.ctx());
    scenario.end();
}

#[test, expected_failure(abort_code = channel::ENotRenter)]
fun stranger_cannot_top_up() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(STRANGER);
    let mut ch = scenario.take_shared<Channel>();
    ch.top_up(coin::mint_for_testing<SUI>(5, scenario.ctx()), scenario.ctx());
    ts::return_shared(ch);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EZeroAmount)]
fun zero_top_up_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(RENTER);
    let mut ch = scenario.take_shared<Channel>();
    ch.top_up(coin::mint_for_testing<SUI>(0, scenario.ctx()), scenario.ctx());
    ts::return_shared(ch);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::ENotProvider)]
fun renter_cannot_use_provider_close() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(RENTER);
    let mut ch = scenario.take_shared<Channel>();
    ch.provider_close(scenario.ctx());
    ts::return_shared(ch);
    scenario.end();
}

#[test]
fun renter_recovers_unclaimed_deposit_after_challenge_period() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    claim_as(&mut scenario, PROVIDER, 250);
    scenario.next_tx(RENTER);
    let clock = clock_at(&mut scenario, 5_000);
    let mut ch = scenario.take_shared<Channel>();
    ch.request_close(&clock, scenario.ctx());
    assert!(ch.close_requested_at_ms() == option::some(5_000), 0);
    ts::return_shared(ch);
    clock.destroy_for_testing();
    // The provider may still claim during the challenge period.
    assert!(claim_as(&mut scenario, PROVIDER, 400) == 150, 1);
    scenario.next_tx(STRANGER);
    let clock = clock_at(&mut scenario, 5_000 + CHALLENGE_MS);
    let mut ch = scenario.take_shared<Channel>();
    ch.finalize_close(&clock, scenario.ctx());
    assert!(ch.refunded() == 600 && ch.claimed() == 400 && ch.deposited() == 1000, 2);
    ts::return_shared(ch);
    clock.destroy_for_testing();
    assert!(holdings(&mut scenario, RENTER) == 600, 3);
    assert!(holdings(&mut scenario, PROVIDER) == 400, 4);
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EChallengePeriodActive)]
fun finalize_before_challenge_period_ends_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(RENTER);
    let clock = clock_at(&mut scenario, 5_000);
    let mut ch = scenario.take_shared<Channel>();
    ch.request_close(&clock, scenario.ctx());
    clock.destroy_for_testing();
    let clock = clock_at(&mut scenario, 5_000 + CHALLENGE_MS - 1);
    ch.finalize_close(&clock, scenario.ctx());
    ts::return_shared(ch);
    clock.destroy_for_testing();
    scenario.end();
}

#[test, expected_failure(abort_code = channel::ECloseNotRequested)]
fun finalize_without_request_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(RENTER);
    let clock = clock_at(&mut scenario, 5_000);
    let mut ch = scenario.take_shared<Channel>();
    ch.finalize_close(&clock, scenario.ctx());
    ts::return_shared(ch);
    clock.destroy_for_testing();
    scenario.end();
}

#[test, expected_failure(abort_code = channel::ECloseAlreadyRequested)]
fun second_close_request_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(RENTER);
    let clock = clock_at(&mut scenario, 5_000);
    let mut ch = scenario.take_shared<Channel>();
    ch.request_close(&clock, scenario.ctx());
    ch.request_close(&clock, scenario.ctx());
    ts::return_shared(ch);
    clock.destroy_for_testing();
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EChannelClosing)]
fun top_up_after_close_request_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(RENTER);
    let clock = clock_at(&mut scenario, 5_000);
    let mut ch = scenario.take_shared<Channel>();
    ch.request_close(&clock, scenario.ctx());
    ch.top_up(coin::mint_for_testing<SUI>(5, scenario.ctx()), scenario.ctx());
    ts::return_shared(ch);
    clock.destroy_for_testing();
    scenario.end();
}

#[test, expected_failure(abort_code = channel::EChannelClosed)]
fun claim_after_close_is_refused() {
    let mut scenario = ts::begin(RENTER);
    open_channel(&mut scenario, 1000);
    scenario.next_tx(PROVIDER);
    let mut ch = scenario.take_shared<Channel>();
    ch.provider_close(scenario.ctx());
    ts::return_shared(ch);
    claim_as(&mut scenario, PROVIDER, 300);
    scenario.end();
}
