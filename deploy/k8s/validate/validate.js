#!/usr/bin/env node
// Validates rendered Kubernetes objects against the Kubernetes JSON schemas,
// offline: the schemas come compiled inside the npm packages pinned in
// package.json (kubernetes-models: the core API of Kubernetes 1.32;
// @kubernetes-models/keda and /prometheus-operator: ScaledObject and
// ServiceMonitor). Nothing is downloaded at run time.
//
//   node validate.js RENDERS.json
//
// RENDERS.json maps a render's name to the list of objects it produced
// (tests/deploy/k8s_manifests_test.py writes it from `kubectl kustomize`).
// Every object is checked for types, required fields, enums and formats
// and, as `kubectl apply` does by default (--validate=strict), for fields
// the schema does not know: a misspelt field is an error, not silently
// dropped. Prints one line per problem and a summary; exits 1 if any.
"use strict";

const fs = require("fs");

// Kinds whose schema no pinned package carries. They are named here, and
// the policy tests check them structurally instead; any other unknown kind
// is an error.
const NO_SCHEMA = {
  "inference.networking.k8s.io/v1 InferencePool":
    "no npm package bundles the Gateway API Inference Extension CRDs; " +
    "tests/deploy/k8s_manifests_test.py checks it field by field",
};

// API versions that the packages still model but Kubernetes 1.32 no longer
// serves (the release that removed each): an object in one would be refused.
const REMOVED = {
  "autoscaling/v2beta1": "1.25",
  "autoscaling/v2beta2": "1.26",
  "policy/v1beta1": "1.25",
  "batch/v1beta1": "1.25",
  "discovery.k8s.io/v1beta1": "1.25",
  "events.k8s.io/v1beta1": "1.25",
  "networking.k8s.io/v1beta1": "1.22",
  "extensions/v1beta1": "1.22",
  "flowcontrol.apiserver.k8s.io/v1beta2": "1.29",
  "storage.k8s.io/v1beta1": "1.22",
};

// The package (and subpath) holding the models of an apiVersion.
function modulePath(apiVersion) {
  if (apiVersion === "keda.sh/v1alpha1") {
    return "@kubernetes-models/keda/keda.sh/v1alpha1";
  }
  if (apiVersion === "monitoring.coreos.com/v1") {
    return "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
  }
  // Core ("v1") and the built-in groups ("apps/v1", "policy/v1", ...).
  return `kubernetes-models/${apiVersion}`;
}

function modelClass(apiVersion, kind) {
  let mod;
  try {
    mod = require(modulePath(apiVersion));
  } catch (e) {
    return null;
  }
  const cls = mod[kind];
  const ok = typeof cls === "function" && cls.apiVersion === apiVersion;
  return ok ? cls : null;
}

// Wraps `value` so that every property the compiled validator reads is
// recorded. A property it never reads is one the schema does not declare.
// Objects whose keys the validator lists (maps such as labels, or
// additionalProperties schemas) count as fully known.
function track(value, path, seen) {
  if (Array.isArray(value)) {
    return value.map((v, i) => track(v, `${path}/${i}`, seen));
  }
  if (value === null || typeof value !== "object") return value;
  const read = new Set();
  const entry = { path, value, read, listed: false };
  seen.push(entry);
  const target = {};
  for (const [k, v] of Object.entries(value)) {
    target[k] = track(v, `${path}/${k}`, seen);
  }
  return new Proxy(target, {
    get(t, key, receiver) {
      if (typeof key === "string") read.add(key);
      return Reflect.get(t, key, receiver);
    },
    has(t, key) {
      if (typeof key === "string") read.add(key);
      return Reflect.has(t, key);
    },
    getOwnPropertyDescriptor(t, key) {
      if (typeof key === "string") read.add(key);
      return Reflect.getOwnPropertyDescriptor(t, key);
    },
    ownKeys(t) {
      entry.listed = true;
      return Reflect.ownKeys(t);
    },
  });
}

function validateObject(obj) {
  const problems = [];
  const apiVersion = obj && obj.apiVersion;
  const kind = obj && obj.kind;
  const key = `${apiVersion} ${kind}`;
  if (Object.prototype.hasOwnProperty.call(NO_SCHEMA, key)) {
    return { skipped: NO_SCHEMA[key], problems };
  }
  if (Object.prototype.hasOwnProperty.call(REMOVED, apiVersion)) {
    problems.push(
      `${apiVersion} was removed in Kubernetes ${REMOVED[apiVersion]}`);
    return { problems };
  }
  const cls = modelClass(apiVersion, kind);
  if (!cls) {
    problems.push(`no schema for ${key} (not a Kubernetes 1.32 kind, ` +
      "nor a pinned CRD package's)");
    return { problems };
  }
  const seen = [];
  const proxy = track(obj, "", seen);
  try {
    cls.prototype.validate.call(proxy);
  } catch (e) {
    const errors = e.errors || [];
    if (errors.length === 0) problems.push(String(e.message || e));
    for (const err of errors) {
      const extra = err.params ? ` ${JSON.stringify(err.params)}` : "";
      problems.push(`${err.instancePath || "/"}: ${err.message}${extra}`);
    }
  }
  const unknown = [];
  for (const { path, value, read, listed } of seen) {
    if (listed) continue;
    // Below an unknown field everything is unknown: report the top only.
    if (unknown.some((u) => path === u || path.startsWith(`${u}/`))) continue;
    for (const k of Object.keys(value)) {
      if (!read.has(k)) unknown.push(`${path}/${k}`);
    }
  }
  for (const u of unknown) problems.push(`${u}: unknown field`);
  return { problems };
}

function main() {
  if (process.argv.length !== 3) {
    console.error("usage: node validate.js RENDERS.json");
    process.exit(2);
  }
  const renders = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  let checked = 0;
  let failed = 0;
  const skipped = new Map();
  for (const [render, objects] of Object.entries(renders)) {
    for (const obj of objects) {
      const name = `${obj.kind}/${obj.metadata && obj.metadata.name}`;
      const result = validateObject(obj);
      if (result.skipped) {
        skipped.set(`${obj.apiVersion} ${obj.kind}`, result.skipped);
        continue;
      }
      checked++;
      if (result.problems.length > 0) {
        failed++;
        for (const p of result.problems) {
          console.log(`FAIL schema ${render}: ${name} ${p}`);
        }
      }
    }
  }
  for (const [kind, why] of skipped) {
    console.log(`SKIP schema ${kind}: ${why}`);
  }
  console.log(`schema: ${checked} objects checked, ${failed} invalid, ` +
    `in ${Object.keys(renders).length} renders`);
  process.exit(failed > 0 ? 1 : 0);
}

main();
