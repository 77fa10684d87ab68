package tracker

// The BPF objects and their Go bindings are committed so that a normal build
// needs no clang. Regenerate after editing bpf/*.c or bpf/*.h (needs clang
// and libbpf-dev):
//
//	go generate ./internal/tracker

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel,bpfeb -type event tracker bpf/tracker.bpf.c -- -O2 -g -Wall -Werror
