//! The storage contract suite over the in-memory twins. The same suite runs over real R2 and
//! KV on workerd in the end-to-end tests (tests/e2e/registry.test.mjs).

use futures_executor::block_on;
use wharf::storage::memory::{MemoryKv, MemoryObjects};
use wharf::storage::suite;

fn assert_all_pass(results: Vec<suite::CaseResult>) {
    assert!(!results.is_empty());
    let failed: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
    assert!(failed.is_empty(), "contract violations: {failed:#?}");
}

#[test]
fn memory_objects_satisfy_the_object_store_contract() {
    assert_all_pass(block_on(suite::run_objects(&MemoryObjects::new(), "suite/")));
}

#[test]
fn memory_kv_satisfies_the_key_value_contract() {
    assert_all_pass(block_on(suite::run_kv(&MemoryKv::new(), "suite/")));
}
