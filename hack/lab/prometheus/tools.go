//go:build tools

// Package tools records the promtool command the lab builds to check the
// chart's alerting rules.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
