//go:build tools

// Package tools records the etcd command the lab builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
