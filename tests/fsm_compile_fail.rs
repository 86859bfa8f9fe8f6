//! `fsm!` rejects malformed machines at compile time with a readable message
//! pointing at the offending tokens. Each case is a file in `tests/ui/fsm/`
//! with the expected compiler output beside it (`TRYBUILD=overwrite` renews them).

#[test]
fn fsm_macro_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fsm/*.rs");
}
