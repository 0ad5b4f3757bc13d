//! Node backends (netns, local, docker, ssh) implementing the nemesis node trait (being written).
