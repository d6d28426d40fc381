#[test_only]
module walnut::registry_tests;

use sui::test_scenario::{Self as ts, Scenario};
use walnut::registry::{Self, ProviderEntry};

const OWNER: address = @0xB0B;
const STRANGER: address = @0xE5E;
const FINGERPRINT: vector<u8> = x"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fun register(scenario: &mut Scenario) {
    scenario.next_tx(OWNER);
    registry::register(
        b"https://gpu1.example.org:8443".to_string(),
        FINGERPRINT,
        b"{\"gpus\": 1}".to_string(),
        25,
        scenario.ctx(),
    );
}

#[test]
fun owner_registers_updates_and_retires() {
    let mut scenario = ts::begin(OWNER);
    register(&mut scenario);
    scenario.next_tx(OWNER);
    let mut entry = scenario.take_shared<ProviderEntry>();
    assert!(entry.owner() == OWNER && entry.is_active(), 0);
    assert!(entry.price_per_second_mist() == 25, 1);
    entry.update(
        b"https://gpu2.example.org".to_string(),
        FINGERPRINT,
        b"{}".to_string(),
        30,
        scenario.ctx(),
    );
    assert!(entry.endpoint() == b"https://gpu2.example.org".to_string(), 2);
    assert!(entry.price_per_second_mist() == 30, 3);
    entry.retire(scenario.ctx());
    assert!(!entry.is_active(), 4);
    ts::return_shared(entry);
    scenario.end();
}

#[test, expected_failure(abort_code = registry::ENotOwner)]
fun stranger_cannot_update() {
    let mut scenario = ts::begin(OWNER);
    register(&mut scenario);
    scenario.next_tx(STRANGER);
    let mut entry = scenario.take_shared<ProviderEntry>();
    entry.update(b"x".to_string(), FINGERPRINT, b"{}".to_string(), 1, scenario.ctx());
    ts::return_shared(entry);
    scenario.end();
}

#[test, expected_failure(abort_code = registry::EProviderRetired)]
fun retired_entry_cannot_be_retired_again() {
    let mut scenario = ts::begin(OWNER);
    register(&mut scenario);
    scenario.next_tx(OWNER);
    let mut entry = scenario.take_shared<ProviderEntry>();
    entry.retire(scenario.ctx());
    entry.retire(scenario.ctx());
    ts::return_shared(entry);
    scenario.end();
}

#[test, expected_failure(abort_code = registry::EBadFingerprint)]
fun short_fingerprint_is_refused() {
    let mut scenario = ts::begin(OWNER);
    scenario.next_tx(OWNER);
    registry::register(b"x".to_string(), x"0011", b"{}".to_string(), 1, scenario.ctx());
    scenario.end();
}
