"""Static checks of the Bicep in infra/: syntax (tree-sitter-bicep), parameters, module layout, outputs, security
settings. The checkov scan is slow and runs once, in the integration-marked test at the end."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULES = INFRA / "modules"


def _load_infra_lint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infra_lint", ROOT / "tools" / "infra_lint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("infra_lint", module)
    spec.loader.exec_module(module)
    return module


infra_lint = _load_infra_lint()

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
ALL_FILES = infra_lint.bicep_files(INFRA)

# One module per concern; main.bicep references each.
EXPECTED_MODULES = {
    "network",
    "private-dns",
    "aks",
    "acr",
    "storage",
    "keyvault",
    "log-analytics",
    "prometheus",
    "prometheus-rules",
    "grafana",
    "identity",
    "apim",
    "redis",
    "appinsights",
}

_SECRET_NAME_WORDS = {"key", "keys", "secret", "secrets", "password", "connection", "token", "sas", "credential"}
_SECRET_VALUE = re.compile(
    r"list[A-Za-z]*\(|\.(?:primary|secondary)(?:Key|ConnectionString)|AccountKey=|SharedAccessSignature|"
    r"connectionString|\.keys\[",
    re.IGNORECASE,
)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _declarations(source: str, node_type: str) -> dict[str, str]:
    """Map identifier -> full text of each top-level declaration of one node type."""
    root = infra_lint.parse_tree(source).root_node
    found: dict[str, str] = {}
    for node in root.children:
        if node.type != node_type:
            continue
        ident = next(c for c in node.named_children if c.type == "identifier")
        found[ident.text.decode()] = node.text.decode()
    return found


def secret_outputs(source: str) -> list[str]:
    """Outputs whose name or value looks like a key, secret or connection string."""
    bad = []
    for name, text in _declarations(source, "output_declaration").items():
        words = {w.lower() for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)}
        value = text.split("=", 1)[1] if "=" in text else ""
        if words & _SECRET_NAME_WORDS or _SECRET_VALUE.search(value):
            bad.append(name)
    return bad


# --- syntax ---------------------------------------------------------------------------------------------------


def test_infra_has_bicep_and_param_files() -> None:
    names = {_rel(p) for p in ALL_FILES}
    assert "infra/main.bicep" in names
    assert {"infra/params/dev.bicepparam", "infra/params/prod.bicepparam"} <= names


@pytest.mark.parametrize("path", ALL_FILES, ids=_rel)
def test_file_parses_without_error_or_missing_nodes(path: Path) -> None:
    findings = infra_lint.check_parse([path])
    assert findings == [], "\n".join(str(f) for f in findings)


def test_broken_bicep_is_detected_with_its_line() -> None:
    broken = "param ok string = 'x'\n\nresource sa 'Microsoft.Storage/storageAccounts@2024-01-01' = {\n  name: \n"
    findings = infra_lint.syntax_errors(broken, Path("broken.bicep"))
    assert findings, "a truncated resource must produce ERROR/MISSING nodes"
    assert all(f.line >= 3 for f in findings)
    assert str(findings[0]).startswith("broken.bicep:")


def test_broken_bicepparam_is_detected() -> None:
    assert infra_lint.syntax_errors("using 'main.bicep'\nparam a = 'x'\n", Path("ok.bicepparam"), bicepparam=True) == []
    findings = infra_lint.syntax_errors(
        "using 'main.bicep'\nparam a = \nparam b = [\n", Path("bad.bicepparam"), bicepparam=True
    )
    assert findings


def test_parse_check_fails_on_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bicep"
    bad.write_text("output x string = concat('a', \n", encoding="utf-8")
    assert infra_lint.check_parse([bad])


# --- parameters -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=_rel)
def test_every_param_has_a_description(path: Path) -> None:
    params = infra_lint.param_declarations(_text(path))
    missing = [p.name for p in params if not p.has_description]
    assert not missing, f"{_rel(path)}: params without @description: {missing}"


def test_description_check_can_fail() -> None:
    params = infra_lint.param_declarations("@minLength(1)\nparam a string\n@description('b')\nparam b int = 1\n")
    assert [(p.name, p.has_description) for p in params] == [("a", False), ("b", True)]


@pytest.mark.parametrize("path", BICEP_FILES, ids=_rel)
def test_params_are_constrained(path: Path) -> None:
    for param in infra_lint.param_declarations(_text(path)):
        if param.type_name == "int":
            assert "minValue" in param.decorators, f"{_rel(path)}: int param {param.name} has no @minValue"
        if param.type_name == "string" and not param.has_default:
            assert param.decorators & {"minLength", "allowed"}, (
                f"{_rel(path)}: required string param {param.name} has no @minLength/@allowed"
            )


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_param_file_matches_main(name: str) -> None:
    path = INFRA / "params" / f"{name}.bicepparam"
    assert "using '../main.bicep'" in _text(path)
    assert infra_lint.bicepparam_consistency(path) == []


def test_param_file_check_catches_unknown_and_missing(tmp_path: Path) -> None:
    (tmp_path / "main.bicep").write_text(
        "@description('a')\nparam required string\n@description('b')\nparam optional int = 1\n", encoding="utf-8"
    )
    params = tmp_path / "x.bicepparam"
    params.write_text("using 'main.bicep'\nparam optional = 2\nparam typo = 3\n", encoding="utf-8")
    messages = [f.message for f in infra_lint.bicepparam_consistency(params)]
    assert any("typo is not declared" in m for m in messages)
    assert any("required param required" in m for m in messages)


def _assignments(name: str) -> dict[str, str]:
    text = _text(INFRA / "params" / f"{name}.bicepparam")
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^param (\w+) = (.+)$", text, re.MULTILINE)}


def test_dev_uses_the_smallest_sizes_and_prod_production_sizes() -> None:
    dev, prod = _assignments("dev"), _assignments("prod")
    assert dev["environmentName"] == "'dev'" and prod["environmentName"] == "'prod'"
    assert dev["aksSkuTier"] == "'Free'" and prod["aksSkuTier"] == "'Standard'"
    assert dev["systemPoolVmSize"] == "'Standard_D2ds_v5'"
    assert dev["systemPoolMinCount"] == "1" and int(prod["systemPoolMinCount"]) >= 2
    assert dev["enableServingPool"] == "false" and prod["enableServingPool"] == "true"
    assert (int(prod["servingPoolMinCount"]), int(prod["servingPoolMaxCount"])) == (2, 10)
    assert dev["storageSku"] == "'Standard_LRS'" and prod["storageSku"] == "'Standard_RAGZRS'"
    assert dev["acrSku"] == "'Basic'" and prod["acrSku"] == "'Premium'"
    assert prod["acrPublicNetworkAccess"] == "'Disabled'"
    assert dev["apimSku"] == "'Developer'" and prod["apimSku"] == "'Premium'"
    # One region: prod's resilience is zones plus geo-replicated storage (docs/RUNBOOK.md, disaster recovery).
    assert "enableSecondaryRegion" not in dev and "enableSecondaryRegion" not in prod
    assert prod["availabilityZones"].startswith("[")
    assert int(dev["logDailyQuotaGb"]) > 0


# --- layout -----------------------------------------------------------------------------------------------------


def test_one_module_per_concern_and_main_references_each() -> None:
    present = {p.stem for p in MODULES.glob("*.bicep")}
    assert present == EXPECTED_MODULES
    main = _text(INFRA / "main.bicep")
    for name in sorted(EXPECTED_MODULES):
        assert re.search(rf"^module \w+ 'modules/{re.escape(name)}\.bicep'", main, re.MULTILINE), name


def test_main_is_subscription_scoped_and_single_region() -> None:
    """No half multi-region: one resource group, one cluster, one API Management, no Front Door or peering."""
    main = _text(INFRA / "main.bicep")
    assert "targetScope = 'subscription'" in main
    modules = _declarations(main, "module_declaration")
    for module in ("aks", "apim", "network"):
        assert sum(f"'modules/{module}.bicep'" in text for text in modules.values()) == 1, module
    assert len(_declarations(main, "resource_declaration")) == 1  # the resource group
    for word in ("secondary", "frontdoor", "front door", "peering"):
        assert word not in main.lower(), word
    assert not (MODULES / "frontdoor.bicep").exists() and not (MODULES / "vnet-peering.bicep").exists()


@pytest.mark.parametrize("path", BICEP_FILES, ids=_rel)
def test_api_versions_are_recent_and_stable(path: Path) -> None:
    for rtype, version in re.findall(r"'([A-Za-z]+\.[A-Za-z]+/[A-Za-z/]+)@([0-9-]+(?:-preview)?)'", _text(path)):
        if rtype == "Microsoft.Insights/diagnosticSettings":
            # 2021-05-01-preview is the newest version of this resource type.
            assert version == "2021-05-01-preview"
            continue
        if rtype == "Microsoft.Insights/components":
            # 2020-02-02 is the newest stable version of Application Insights components.
            assert version == "2020-02-02"
            continue
        assert not version.endswith("preview"), f"{rtype}@{version}"
        assert version >= "2022-04-01", f"{rtype}@{version} is old"


# --- outputs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=_rel)
def test_no_output_exposes_a_secret(path: Path) -> None:
    assert secret_outputs(_text(path)) == []


def test_secret_output_check_can_fail() -> None:
    source = (
        "output storageKey string = account.listKeys().keys[0].value\n"
        "output conn string = 'DefaultEndpointsProtocol=https;AccountKey=${k}'\n"
        "output vaultUri string = vault.properties.vaultUri\n"
    )
    assert secret_outputs(source) == ["storageKey", "conn"]


# --- security and sizing settings ----------------------------------------------------------------------------


def _resources(module: str) -> dict[str, str]:
    return _declarations(_text(MODULES / f"{module}.bicep"), "resource_declaration")


def test_storage_is_private_encrypted_and_versioned() -> None:
    storage = _resources("storage")
    account = storage["account"]
    for setting in (
        "allowBlobPublicAccess: false",
        "minimumTlsVersion: 'TLS1_2'",
        "supportsHttpsTrafficOnly: true",
        "allowSharedKeyAccess: false",
        "requireInfrastructureEncryption: true",
        "defaultAction: 'Deny'",
    ):
        assert setting in account, setting
    blob = storage["blobService"]
    assert "isVersioningEnabled: true" in blob
    assert re.search(r"deleteRetentionPolicy: \{\s*enabled: true", blob)
    assert re.search(r"containerDeleteRetentionPolicy: \{\s*enabled: true", blob)
    assert "publicAccess: 'None'" in storage["containers"]
    main = _text(INFRA / "main.bicep")
    assert re.search(r"containerNames: \[\s*'models'\s*'payload-logs'\s*\]", main)


def test_storage_public_network_access_defaults_to_disabled() -> None:
    params = {p.name: p for p in infra_lint.param_declarations(_text(MODULES / "storage.bicep"))}
    assert params["publicNetworkAccess"].has_default
    assert "param publicNetworkAccess string = 'Disabled'" in _text(MODULES / "storage.bicep")


def test_key_vault_uses_rbac_purge_protection_and_is_private() -> None:
    vault = _resources("keyvault")["vault"]
    for setting in (
        "enableRbacAuthorization: true",
        "enableSoftDelete: true",
        "enablePurgeProtection: true",
        "defaultAction: 'Deny'",
    ):
        assert setting in vault, setting
    assert "param publicNetworkAccess string = 'Disabled'" in _text(MODULES / "keyvault.bicep")


def test_redis_is_tls_only_private_and_keeps_its_key_in_key_vault() -> None:
    redis = _resources("redis")
    cache = redis["cache"]
    for setting in (
        "enableNonSslPort: false",
        "minimumTlsVersion: '1.2'",
        "publicNetworkAccess: publicNetworkAccess",
        "'maxmemory-policy': maxmemoryPolicy",
    ):
        assert setting in cache, setting
    assert "enableNonSslPort: true" not in _text(MODULES / "redis.bicep")
    params = _text(MODULES / "redis.bicep")
    assert "param publicNetworkAccess string = 'Disabled'" in params
    assert "param skuName string = 'Standard'" in params and "param capacity int = 1" in params  # Standard C1
    assert "family: skuName == 'Premium' ? 'P' : 'C'" in cache
    # The access key goes to Key Vault only; no output names or carries it.
    assert "value: cache.listKeys().primaryKey" in redis["keySecret"]
    assert "exp: dateTimeToEpoch(keySecretExpiry)" in redis["keySecret"]
    outputs = _declarations(params, "output_declaration")
    assert set(outputs) == {"id", "name", "hostName", "sslPort"}
    assert secret_outputs(params) == []
    assert not any("listKeys" in text or "Key" in text.split("=", 1)[1] for text in outputs.values())
    # Reading the key is granted on that secret alone.
    assert "scope: keySecret" in redis["keyReaders"]
    assert "privateLinkServiceId: cache.id" in redis["privateEndpoint"]
    assert "groupIds: [\n            'redisCache'" in redis["privateEndpoint"]
    assert "workspaceId: logAnalyticsWorkspaceId" in redis["diagnostics"]
    main = _text(INFRA / "main.bicep")
    module = _declarations(main, "module_declaration")["redis"]
    for wiring in (
        "privateEndpointSubnetId: network.outputs.privateEndpointSubnetId",
        "privateDnsZoneId: privateDns.outputs.redisZoneId",
        "keyVaultName: keyVault.outputs.name",
        "logAnalyticsWorkspaceId: logAnalytics.outputs.id",
    ):
        assert wiring in module, wiring
    assert "privatelink.redis.cache.windows.net" in _text(MODULES / "private-dns.bicep")
    dev, prod = _assignments("dev"), _assignments("prod")
    assert dev["redisSkuName"] == prod["redisSkuName"] == "'Standard'"
    assert prod["redisCapacity"] == "1"


def test_aks_identity_and_access() -> None:
    cluster = _resources("aks")["cluster"]
    for setting in (
        "disableLocalAccounts: true",
        "enableAzureRBAC: true",
        "managed: true",
        "workloadIdentity: {\n        enabled: true",
        "oidcIssuerProfile: {\n      enabled: true",
        "metrics: {\n        enabled: true",
        "networkPolicy: 'cilium'",
        "authorizedIPRanges: authorizedIpRanges",
    ):
        assert setting in cluster, setting


def test_spot_training_pool_scales_to_zero() -> None:
    pool = _resources("aks")["trainingPool"]
    assert "scaleSetPriority: 'Spot'" in pool
    assert "enableAutoScaling: true" in pool
    assert re.search(r"^\s*minCount: 0$", pool, re.MULTILINE)
    assert re.search(r"^\s*count: 0$", pool, re.MULTILINE)


def test_every_node_pool_encrypts_at_host_with_ephemeral_disks_and_enough_pods() -> None:
    """The checks checkov cannot evaluate on conditional resources (CKV_AZURE_168, CKV_AZURE_227)."""
    resources = _resources("aks")
    system_pool = resources["cluster"].split("agentPoolProfiles:", 1)[1]
    for name, text in (("system", system_pool), ("serving", resources["servingPool"])):
        assert "enableEncryptionAtHost: true" in text, name
        assert "osDiskType: 'Ephemeral'" in text, name
        assert "maxPods: maxPods" in text, name
    training = resources["trainingPool"]
    assert "enableEncryptionAtHost: true" in training and "maxPods: maxPods" in training
    max_pods = {p.name: p for p in infra_lint.param_declarations(_text(MODULES / "aks.bicep"))}["maxPods"]
    assert "@minValue(50)" in _text(MODULES / "aks.bicep").split("param maxPods", 1)[0].rsplit("@description", 1)[1]
    assert max_pods.has_default


def test_acr_grants_acr_pull_to_kubelet_identities() -> None:
    acr = _text(MODULES / "acr.bicep")
    assert "adminUserEnabled: false" in acr and "anonymousPullEnabled: false" in acr
    assert "7f951dda-4ed3-4680-a7ca-43fe172d538d" in acr  # AcrPull
    main = _text(INFRA / "main.bicep")
    assert re.search(r"pullPrincipalIds: \[\s*aks\.outputs\.kubeletObjectId\s*\]", main)


def test_workload_identities_are_federated_and_least_privilege() -> None:
    identity = _text(MODULES / "identity.bicep")
    for workload in ("serving", "drift", "pipeline", "rollout"):
        federation = _resources("identity")[f"{workload}Federation"]
        assert "system:serviceaccount:" in federation
        assert "api://AzureADTokenExchange" in federation
    # Role assignments are scoped to a container or the vault, never the account or the resource group.
    for name, text in _resources("identity").items():
        if "roleAssignments@" in text:
            scope = re.search(r"scope: (\w+)", text)
            assert scope and scope.group(1) in {
                "modelsContainer",
                "payloadLogsContainer",
                "vault",
                "cluster",
                "monitorWorkspace",
            }, name
    assert "Owner" not in identity and "'Contributor'" not in identity


def test_apim_fronts_the_v2_infer_route_with_keys_and_a_rate_limit() -> None:
    apim = _text(MODULES / "apim.bicep")
    assert "urlTemplate: '/v2/models/${modelName}/infer'" in apim
    assert "param modelName string = 'fraud-detector'" in apim
    assert "subscriptionRequired: true" in apim
    assert "<rate-limit-by-key " in apim
    assert "<validate-jwt " in apim


def test_prometheus_rule_groups_come_from_the_chart_rule_file() -> None:
    main = _text(INFRA / "main.bicep")
    match = re.search(r"loadYamlContent\('([^']+)', '\$\.groups'\)", main)
    assert match, "main.bicep must load the rule file"
    rule_file = (INFRA / match.group(1)).resolve()
    assert rule_file == ROOT / "monitoring" / "alerts" / "fraud-detection.rules.yaml"
    groups = yaml.safe_load(rule_file.read_text(encoding="utf-8"))["groups"]
    for group in groups:
        # Azure limits a rule group to 20 rules; every alert's `for` must translate to an ISO 8601 duration.
        assert len(group["rules"]) <= 20, group["name"]
        for rule in group["rules"]:
            if "for" in rule:
                assert re.fullmatch(r"(\d+[hms])+", rule["for"]), rule["for"]
    rules = _resources("prometheus-rules")["groups"]
    assert "expression: rule.expr" in rules and "'PT${toUpper(rule[forKey])}'" in rules


def test_app_insights_is_workspace_based_and_its_connection_string_stays_in_key_vault() -> None:
    module = _text(MODULES / "appinsights.bicep")
    resources = _resources("appinsights")
    assert "WorkspaceResourceId: logAnalyticsWorkspaceId" in resources["component"]
    assert "IngestionMode: 'LogAnalytics'" in resources["component"]
    # The connection string is written to the vault only, with an expiry, and no output carries it.
    assert "value: component.properties.ConnectionString" in resources["vaultEntry"]
    assert "exp: dateTimeToEpoch(secretExpiry)" in resources["vaultEntry"]
    outputs = _declarations(module, "output_declaration")
    assert set(outputs) == {"id", "vaultEntryName"}
    assert not any("ConnectionString" in text for text in outputs.values())
    # Reading it is granted on that secret alone (Key Vault Secrets User), to the serving and drift identities.
    assert "scope: vaultEntry" in resources["secretReaders"]
    assert "4633458b-17de-408a-b874-0445c86b69e6" in module
    main_module = _declarations(_text(INFRA / "main.bicep"), "module_declaration")["appInsights"]
    for wiring in (
        "logAnalyticsWorkspaceId: logAnalytics.outputs.id",
        "keyVaultName: keyVault.outputs.name",
        "identity.outputs.servingPrincipalId",
        "identity.outputs.driftPrincipalId",
    ):
        assert wiring in main_module, wiring
    # deploy.yml feeds the chart from these outputs (tools/aks_values.py).
    main_outputs = _declarations(_text(INFRA / "main.bicep"), "output_declaration")
    assert {"tenantId", "appInsightsVaultEntry", "vaultUri"} <= set(main_outputs)


# --- checkov (slow) ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_checkov_passes_on_infra_and_workflows() -> None:
    problems = infra_lint.check_checkov([(INFRA, "bicep"), (ROOT / ".github" / "workflows", "github_actions")])
    assert problems == []


@pytest.mark.integration
def test_checkov_scan_can_fail(tmp_path: Path) -> None:
    (tmp_path / "public.bicep").write_text(
        "resource sa 'Microsoft.Storage/storageAccounts@2024-01-01' = {\n"
        "  name: 'stpublicexample'\n  location: 'westeurope'\n  kind: 'StorageV2'\n"
        "  sku: {\n    name: 'Standard_LRS'\n  }\n"
        "  properties: {\n    allowBlobPublicAccess: true\n    minimumTlsVersion: 'TLS1_0'\n  }\n}\n",
        encoding="utf-8",
    )
    binary = infra_lint.checkov_binary()
    assert binary, "checkov is not installed"
    problems, _ = infra_lint.run_checkov(tmp_path, "bicep", binary)
    assert any("CKV_AZURE_44" in p for p in problems)
