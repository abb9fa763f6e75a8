//! cgroups v2 and v1: detection, the planned writes for limits, and the sandbox's own cgroup.
