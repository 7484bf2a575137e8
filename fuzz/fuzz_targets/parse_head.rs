//! Fuzz the request-head parser and the body decoder behind it: no input
//! may panic, and what they report must be consistent with the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpiweb::http::{parse_request_head, BodyReader, HeadLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits::default();
    let Ok(Some((used, head))) = parse_request_head(data, &limits) else {
        return;
    };
    assert!(used <= data.len());
    assert!(used <= limits.max_head + data.len().min(limits.max_head));
    // Every prefix of a complete head is incomplete or an error, never a
    // different head.
    if let Ok(Some((n, _))) = parse_request_head(&data[..used - 1], &limits) {
        panic!("a shorter prefix parsed as a whole head of {n} bytes");
    }
    let _ = head.path_query();
    let mut rest = &data[used..];
    if let Ok(mut body) = BodyReader::new(&mut rest, head.framing, 1 << 20) {
        let mut total = 0u64;
        let mut buf = [0u8; 512];
        while let Ok(n) = body.read_body(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
            assert!(total <= 1 << 20, "body past its limit");
        }
    }
});
