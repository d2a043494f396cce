//! The store conformance suite: every test is written once, as an async
//! function over `Arc<dyn domain::Store>`, and run against each backend
//! (memory, the reference; SQLite; PostgreSQL at HEARTH_TEST_DATABASE_URL).
//! Index rows are built by hand (harness.rs) so the suite does not depend on
//! search-value extraction.

mod audit;
mod cache;
mod chains;
mod commit;
mod contained;
mod crud;
mod durability;
mod encryption;
mod harness;
mod history;
mod patient_tokens;
mod plans;
mod reindex;
mod schema_upgrade;
mod search;
mod search_values;
mod text;
mod versioning;

/// Generates, for one backend, a module per test module with one
/// `#[tokio::test]` per test function, each on a fresh store.
macro_rules! backend_tests {
    ($backend:ident => $runner:path; $($module:ident { $($test:ident),* $(,)? })*) => {
        mod $backend {
            $(
                mod $module {
                    $(
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $test() {
                            $runner(crate::$module::$test).await;
                        }
                    )*
                }
            )*
        }
    };
}

/// Runs the listed tests against every backend.
macro_rules! conformance {
    ($($module:ident { $($test:ident),* $(,)? })*) => {
        backend_tests!(memory => crate::harness::memory; $($module { $($test),* })*);
        backend_tests!(sqlite => crate::harness::sqlite; $($module { $($test),* })*);
        backend_tests!(postgres => crate::harness::postgres; $($module { $($test),* })*);
    };
}

/// The audit trail tests: they need the chain's key and a way into the
/// database, so they have runners of their own (tests/it/audit.rs).
macro_rules! trail_tests {
    ($($test:ident),* $(,)?) => {
        backend_tests!(memory_trail => crate::audit::on_memory; audit { $($test),* });
        backend_tests!(sqlite_trail => crate::audit::on_sqlite; audit { $($test),* });
        backend_tests!(postgres_trail => crate::audit::on_postgres; audit { $($test),* });
    };
}

trail_tests! {
    commits_chain_their_records,
    concurrent_audit_only_commits_leave_no_gap,
    failed_commits_leave_no_entries,
    system_records_compare_and_swap,
    racing_system_record_creates_one_wins,
    reports_answer_as_the_memory_store,
    a_changed_record_is_found,
    a_deleted_entry_is_found,
    swapped_entries_are_found,
    a_truncated_tail_is_found_with_a_checkpoint,
}

conformance! {
    contained {
        only_asked_for_contained_resources_are_searched,
        every_condition_holds_for_one_contained_resource,
        contained_matches_sort_by_their_own_values,
        contained_resources_follow_their_container,
        other_searches_never_see_contained_resources,
        chains_go_into_contained_resources,
        a_resource_can_match_itself_and_contain_a_match,
    }
    patient_tokens {
        a_patients_coded_records_in_date_order,
        chained_patients_with_a_code,
        counts_of_one_lookup_are_per_type,
    }
    chains {
        chain_follows_references_of_the_named_types,
        chain_combines_with_other_filters,
        chains_nest_to_any_depth,
        has_finds_resources_referred_to_by_matching_ones,
        has_nests_and_ends_with_any_condition,
        chains_in_conditional_checks,
        has_with_conditions_that_are_not_index_lookups,
    }
    text {
        every_word_must_occur,
        phrases_keep_their_order,
        a_star_makes_the_last_word_a_prefix,
        narrative_and_content_are_separate,
        alternatives_and_other_filters,
        system_search_spans_types,
        words_beyond_ascii,
        updates_deletes_and_reindex_replace_words,
        chains_and_conditional_checks_see_words,
        phrase_ir_is_what_stores_evaluate,
        words_are_found_before_and_after_the_index_catches_up,
    }
    search_values {
        token_set_matches_any_pair,
        token_set_negated_is_not_in,
        unresolved_terminology_matches_nothing,
        composite_components_match_in_one_element,
        composite_missing,
        composite_of_date_string_reference_and_numbers,
    }
    crud {
        create_then_read,
        read_many_answers_in_the_order_asked,
        read_missing_is_none,
        update_then_vread_each_version,
        delete_keeps_a_tombstone,
        types_are_separate_namespaces,
        body_is_byte_faithful,
        ping_answers,
    }
    versioning {
        first_version_must_be_1,
        write_must_be_the_next_version,
        version_check_none_rejects_existing,
        version_check_accepts_current,
        version_check_rejects_stale,
        version_check_on_the_written_resource_rejects_stale,
        concurrent_updates_one_wins,
        recreate_after_delete_continues_versions,
    }
    commit {
        failed_check_writes_nothing,
        failed_write_rolls_back_earlier_writes,
        matches_check_accepts_same_set,
        matches_check_detects_a_new_match,
        matches_check_detects_a_removed_match,
        racing_conditional_creates_one_wins,
        concurrent_creates_all_land,
        conflicts_do_not_affect_concurrent_commits,
        large_and_small_commits_queued_together_land_whole,
        same_resource_twice_in_one_commit,
        a_large_commit_indexes_every_row,
        update_replaces_index_rows,
        delete_removes_index_rows,
    }
    reindex {
        scan_walks_current_resources_in_key_order,
        reindex_replaces_rows_without_a_new_version,
        reindex_skips_resources_that_moved_on,
    }
    history {
        instance_history_newest_first,
        type_and_system_history,
        history_paging,
        history_since_and_not_after,
        history_of_unknown_is_empty,
    }
    search {
        by_id,
        by_id_system_level,
        last_updated_prefixes,
        missing_true_and_false,
        token_any_system,
        token_system_and_code,
        token_no_system,
        token_system_only,
        token_not,
        token_text,
        string_prefix_is_case_and_accent_insensitive,
        string_exact,
        string_contains,
        reference_typed_and_untyped,
        reference_by_url,
        uri_exact_below_above,
        date_prefixes,
        number_prefixes,
        quantity_units_and_prefixes,
        or_within_and_across_filters,
        empty_filter_matches_nothing,
        unknown_param_matches_nothing,
        deleted_resources_are_not_found,
        default_order_newest_first,
        sort_by_id_and_last_updated,
        sort_by_string_uses_lowest_or_highest,
        sort_by_date_number_and_token,
        sort_puts_missing_last,
        paging_with_count_and_offset,
        total_modes,
        system_search_by_last_updated,
    }
}
