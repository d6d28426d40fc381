// Generated from contracts/test_vectors.json by
// `python -m jupyter_walnut.ledger.vectors contracts/`: do not edit by hand.
#[test_only]
module walnut::voucher_vectors_tests;

use walnut::voucher;

#[test]
fun domain_tag() {
    assert!(voucher::domain() == x"77616c6e75742d766f75636865722d7631", 0);
}

// zero amount
#[test]
fun valid_0() {
    let pk = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
    let sig = x"340d56c17a9c8c1c5c4a1380d3ec52c383254022f6153b24824c808041be2491f3068b42ddb841212ffd0cce5ff86e3d5427c4b844e6370879935cf1a54cb20a";
    let channel = @0xad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2;
    let amount: u64 = 0;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a20000000000000000", 0);
    assert!(voucher::verify(&pk, &sig, channel, amount), 1);
    assert!(voucher::address_of_public_key(&pk) == @0x27b3546ba62dc1645e3da1d459124f378754233540e5f566babd78935a11fce4, 2);
}

// one mist
#[test]
fun valid_1() {
    let pk = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
    let sig = x"cfb120807d34b1a6a9eea0aa156cca56c9dd939b833a972ee916f2f0d3a10672a255b39cf7d874d9ba8a981091833f8e87d51d6472f6aeed387bf969b54c0a08";
    let channel = @0xad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2;
    let amount: u64 = 1;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a20100000000000000", 0);
    assert!(voucher::verify(&pk, &sig, channel, amount), 1);
    assert!(voucher::address_of_public_key(&pk) == @0x27b3546ba62dc1645e3da1d459124f378754233540e5f566babd78935a11fce4, 2);
}

// one sui
#[test]
fun valid_2() {
    let pk = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
    let sig = x"4166789d60326b6508967ff879b6e7e6aee5b076604e324fc01954130aa346013ff0376cc1d9b7ace525300bc8517b4302a5bd5bff60e08fa38735b6663f9701";
    let channel = @0xac75580e0efd0c8d731e4a3474b5eef94325b8b181ef105a606cc52700b8cde0;
    let amount: u64 = 1000000000;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ac75580e0efd0c8d731e4a3474b5eef94325b8b181ef105a606cc52700b8cde000ca9a3b00000000", 0);
    assert!(voucher::verify(&pk, &sig, channel, amount), 1);
    assert!(voucher::address_of_public_key(&pk) == @0x27b3546ba62dc1645e3da1d459124f378754233540e5f566babd78935a11fce4, 2);
}

// u64 max
#[test]
fun valid_3() {
    let pk = x"519ace4ef7a897758847dab4b31d37bbd2faff52cce0cdde57cc975da3e41290";
    let sig = x"f85fbf23307f892e38f4c3f9bd4392db147b8d4a369689626750665599fab6d7838926742c1889b0700b40a9489e72bd17e7144d26f56d3ef5a00de91ce3f509";
    let channel = @0x63a7ca53f5f451ec4d5d34780466fc470ac5abf3928c38f1bc32de86c1d8c6c4;
    let amount: u64 = 18446744073709551615;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d763163a7ca53f5f451ec4d5d34780466fc470ac5abf3928c38f1bc32de86c1d8c6c4ffffffffffffffff", 0);
    assert!(voucher::verify(&pk, &sig, channel, amount), 1);
    assert!(voucher::address_of_public_key(&pk) == @0x834e3f66366b086d0491457a38f822fbccb66899eb106fd821ab818f8577d96c, 2);
}

// low channel id
#[test]
fun valid_4() {
    let pk = x"519ace4ef7a897758847dab4b31d37bbd2faff52cce0cdde57cc975da3e41290";
    let sig = x"d024aac6975268aa2eb0e5ca0853acc57cd11e929c3604900b6578e90781a3e888905ae4ae847e38c6537b25699da3325935a2c19b317479f37b1c3063917e0e";
    let channel = @0x0000000000000000000000000000000000000000000000000000000000000001;
    let amount: u64 = 123456789;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631000000000000000000000000000000000000000000000000000000000000000115cd5b0700000000", 0);
    assert!(voucher::verify(&pk, &sig, channel, amount), 1);
    assert!(voucher::address_of_public_key(&pk) == @0x834e3f66366b086d0491457a38f822fbccb66899eb106fd821ab818f8577d96c, 2);
}

// wrong key
#[test]
fun invalid_0() {
    let pk = x"519ace4ef7a897758847dab4b31d37bbd2faff52cce0cdde57cc975da3e41290";
    let sig = x"90b7aea765249be6f9c554553ef2a2af4108525a6a78b0f294ea29e2a4f8caa21f86860c93f9dc0db519276fb32a56dc4a6f32151f2993ec1170f4ecdee9a007";
    let channel = @0xad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2;
    let amount: u64 = 500;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2f401000000000000", 0);
    assert!(!voucher::verify(&pk, &sig, channel, amount), 1);
}

// raised amount
#[test]
fun invalid_1() {
    let pk = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
    let sig = x"90b7aea765249be6f9c554553ef2a2af4108525a6a78b0f294ea29e2a4f8caa21f86860c93f9dc0db519276fb32a56dc4a6f32151f2993ec1170f4ecdee9a007";
    let channel = @0xad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2;
    let amount: u64 = 501;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2f501000000000000", 0);
    assert!(!voucher::verify(&pk, &sig, channel, amount), 1);
}

// wrong channel
#[test]
fun invalid_2() {
    let pk = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
    let sig = x"90b7aea765249be6f9c554553ef2a2af4108525a6a78b0f294ea29e2a4f8caa21f86860c93f9dc0db519276fb32a56dc4a6f32151f2993ec1170f4ecdee9a007";
    let channel = @0xac75580e0efd0c8d731e4a3474b5eef94325b8b181ef105a606cc52700b8cde0;
    let amount: u64 = 500;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ac75580e0efd0c8d731e4a3474b5eef94325b8b181ef105a606cc52700b8cde0f401000000000000", 0);
    assert!(!voucher::verify(&pk, &sig, channel, amount), 1);
}

// flipped signature bit
#[test]
fun invalid_3() {
    let pk = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
    let sig = x"90b7aea765249be6f9c555553ef2a2af4108525a6a78b0f294ea29e2a4f8caa21f86860c93f9dc0db519276fb32a56dc4a6f32151f2993ec1170f4ecdee9a007";
    let channel = @0xad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2;
    let amount: u64 = 500;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2f401000000000000", 0);
    assert!(!voucher::verify(&pk, &sig, channel, amount), 1);
}

// truncated signature
#[test]
fun invalid_4() {
    let pk = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
    let sig = x"90b7aea765249be6f9c554553ef2a2af4108525a6a78b0f294ea29e2a4f8caa21f86860c93f9dc0db519276fb32a56dc4a6f32151f2993ec1170f4ecdee9a0";
    let channel = @0xad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2;
    let amount: u64 = 500;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2f401000000000000", 0);
    assert!(!voucher::verify(&pk, &sig, channel, amount), 1);
}

// zero signature
#[test]
fun invalid_5() {
    let pk = x"31ec5844a913688e50a2f460753cf25585fa503171a10652d2576e388f2db5b0";
    let sig = x"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
    let channel = @0xad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2;
    let amount: u64 = 500;
    assert!(voucher::message(channel, amount) == x"77616c6e75742d766f75636865722d7631ad9c6637151970657b062cfbda3069096ea2fd74e3f33b8c0cb085488224a3a2f401000000000000", 0);
    assert!(!voucher::verify(&pk, &sig, channel, amount), 1);
}
