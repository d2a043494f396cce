//! A compiled FHIRPath subset: what search-parameter expressions and FHIRPath Patch need.
