//go:build mage

// Deployment targets (image, package): kept in their own file so that
// magefile.go's targets and these change independently. The artifacts are
// built by package deploy, which testing/deploy tests too.

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/magefile/mage/mg"

	"github.com/netprocbeat/netprocbeat/deploy"
)

// distDir holds the static binary and the packages.
const distDir = "build/dist"

// deploySources are the image's and packages' inputs: this repository and
// build/dist/netprocbeat.
func deploySources() (deploy.Sources, error) {
	root, err := os.Getwd()
	if err != nil {
		return deploy.Sources{}, err
	}
	return deploy.Sources{Root: root, Binary: filepath.Join(root, distDir, deploy.Name)}, nil
}

// Dist builds the static (CGO_ENABLED=0) linux binary the image and the packages carry: build/dist/netprocbeat.
func Dist() error {
	src, err := deploySources()
	if err != nil {
		return err
	}
	fmt.Println("+ CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '-s -w' -o", filepath.Join(distDir, deploy.Name), "./cmd/netprocbeat")
	return deploy.BuildBinary(src.Root, src.Binary, "")
}

// Image builds the container image netprocbeat:<version> offline (docker import of a root filesystem; needs a running dockerd). IMAGE_TAG overrides the tag.
func Image(ctx context.Context) error {
	mg.Deps(Dist)
	src, err := deploySources()
	if err != nil {
		return err
	}
	tag := os.Getenv("IMAGE_TAG")
	if tag == "" {
		tag = deploy.ImageTag()
	}
	fmt.Println("+ docker import (root filesystem of", src.Binary+")", tag)
	if err := src.ImportImage(ctx, tag); err != nil {
		return err
	}
	fmt.Println("built image", tag)
	return nil
}

// Package writes build/dist/netprocbeat-<version>-linux-<arch>.tar.gz and build/dist/netprocbeat-<version>-<arch>.deb.
func Package() error {
	mg.Deps(Dist)
	src, err := deploySources()
	if err != nil {
		return err
	}
	tgz, err := src.TarGz(distDir)
	if err != nil {
		return err
	}
	fmt.Println("built", tgz)
	deb, err := src.Deb(distDir)
	if err != nil {
		return err
	}
	fmt.Println("built", deb)
	return nil
}
