//! The container's memory limit, from which `--max-memory` takes its default: cgroup v2's
//! `memory.max`, else cgroup v1's `memory.limit_in_bytes`.

use zmq_proxy_api::defaults::{CGROUP_V1_MEMORY_LIMIT, CGROUP_V2_MEMORY_MAX};
use zmq_proxy_api::memory::cgroup_limit;

/// The memory limit of the cgroup this process runs in, if it has one. v2 is read first: a
/// host with both mounts (hybrid) limits memory through v2 when that file exists.
pub fn memory_limit() -> Option<u64> {
    [CGROUP_V2_MEMORY_MAX, CGROUP_V1_MEMORY_LIMIT]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| cgroup_limit(&text))
}
