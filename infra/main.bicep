// Fraud detection platform on Azure, in one region (zone-redundant where the region has zones): one resource
// group, one module per concern (Azure Verified Modules layout). Deploy at subscription scope:
//   az deployment sub create --location <region> --template-file infra/main.bicep \
//     --parameters infra/params/dev.bicepparam
// No output carries a secret: only names, IDs, endpoints and client IDs.
targetScope = 'subscription'

@description('Short name of the workload, lowercase letters and digits; prefixes every resource name.')
@minLength(3)
@maxLength(10)
param baseName string = 'fraud'

@description('Environment; selects nothing by itself, the parameter files carry the sizes.')
@allowed([
  'dev'
  'prod'
])
param environmentName string

@description('Primary Azure region.')
@minLength(3)
param location string = deployment().location

@description('Tags applied to every resource.')
param tags object = {}

@description('Address space of the primary VNet.')
@minLength(9)
param vnetAddressPrefix string = '10.20.0.0/16'

@description('Kubernetes version; empty picks the region\'s default version.')
param kubernetesVersion string = ''

@description('AKS pricing tier: Free (dev, no SLA), Standard (uptime SLA) or Premium (long-term support).')
@allowed([
  'Free'
  'Standard'
  'Premium'
])
param aksSkuTier string = 'Standard'

@description('Availability zones of node pools and zonal resources (empty for regions without zones).')
param availabilityZones array = [
  '1'
  '2'
  '3'
]

@description('CIDR ranges allowed to reach the AKS API servers (office, VPN and CI runner egress).')
@minLength(1)
param apiServerAuthorizedIpRanges array

@description('Entra ID group object IDs that get cluster-admin on AKS and Grafana Admin.')
param adminGroupObjectIds array = []

@description('VM size of the AKS system pool (needs a temp disk >= osDiskSizeGb for ephemeral OS disks).')
@minLength(1)
param systemPoolVmSize string = 'Standard_D4ds_v5'

@description('Minimum node count of the system pool.')
@minValue(1)
@maxValue(100)
param systemPoolMinCount int = 2

@description('Maximum node count of the system pool.')
@minValue(1)
@maxValue(100)
param systemPoolMaxCount int = 5

@description('Ephemeral OS disk size in GiB of every pool.')
@minValue(30)
@maxValue(2048)
param osDiskSizeGb int = 128

@description('Dedicated on-demand pool for the model server (otherwise it shares the system pool).')
param enableServingPool bool = true

@description('VM size of the serving pool.')
@minLength(1)
param servingPoolVmSize string = 'Standard_D4ds_v5'

@description('Minimum node count of the serving pool (the InferenceService runs at least 2 replicas).')
@minValue(0)
@maxValue(100)
param servingPoolMinCount int = 2

@description('Maximum node count of the serving pool.')
@minValue(1)
@maxValue(100)
param servingPoolMaxCount int = 10

@description('VM size of the spot training pool (scales to zero when no pipeline runs).')
@minLength(1)
param trainingPoolVmSize string = 'Standard_D8ds_v5'

@description('Maximum node count of the spot training pool.')
@minValue(1)
@maxValue(100)
param trainingPoolMaxCount int = 4

@description('Container registry SKU; Premium adds private endpoint, zone redundancy and retention.')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param acrSku string = 'Premium'

@description('Public network access of the registry; Disabled requires acrSku Premium (push from inside the VNet).')
@allowed([
  'Enabled'
  'Disabled'
])
param acrPublicNetworkAccess string = 'Disabled'

@description('Storage replication for models and payload logs.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param storageSku string = 'Standard_RAGZRS'

@description('Days deleted or overwritten blobs stay recoverable.')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 30

@description('Azure Cache for Redis tier of the online feature store: Standard (primary + replica, SLA) or Premium.')
@allowed([
  'Standard'
  'Premium'
])
param redisSkuName string = 'Standard'

@description('Azure Cache for Redis size: 1 is C1 (1 GB) on Standard, P1 (6 GB) on Premium.')
@minValue(0)
@maxValue(6)
param redisCapacity int = 1

@description('Days Key Vault keeps deleted secrets and vaults.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteDays int = 90

@description('Days Log Analytics retains logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 90

@description('Daily Log Analytics ingestion cap in GB; -1 means no cap.')
@minValue(-1)
param logDailyQuotaGb int = -1

@description('Azure Managed Grafana SKU.')
@allowed([
  'Essential'
  'Standard'
])
param grafanaSku string = 'Standard'

@description('API Management SKU: Developer (no SLA) or Premium (SLA, zones).')
@allowed([
  'Developer'
  'Premium'
])
param apimSku string = 'Premium'

@description('API Management scale units (Developer: 1).')
@minValue(1)
@maxValue(12)
param apimCapacity int = 1

@description('Email of the API publisher.')
@minLength(3)
param apimPublisherEmail string

@description('Name of the API publisher organisation.')
@minLength(1)
param apimPublisherName string

@description('Inference ingress URL inside the VNet (KServe internal load balancer); empty until the chart is installed.')
param inferenceBackendUrl string = ''

@description('Host header of the InferenceService behind the ingress; empty: none.')
param inferenceHostName string = ''

@description('Requests per subscription per rate-limit period at API Management.')
@minValue(1)
@maxValue(1000000)
param apimRateLimitCalls int = 600

@description('Rate-limit period in seconds at API Management.')
@minValue(1)
@maxValue(3600)
param apimRateLimitPeriodSeconds int = 60

@description('Entra ID audience required in bearer tokens at API Management; empty: subscription keys only.')
param apimJwtAudience string = ''

@description('Name of the served model.')
@minLength(1)
@maxLength(63)
param modelName string = 'fraud-detector'

@description('Kubernetes namespace of the model server and drift job.')
@minLength(1)
@maxLength(63)
param appNamespace string = 'fraud-detection'

@description('Service account of the model server (the chart\'s serviceAccount, named after the release).')
@minLength(1)
@maxLength(253)
param servingServiceAccountName string = 'fraud-detection'

@description('Service account of the drift CronJob (shared with the model server unless the chart gives it its own).')
@minLength(1)
@maxLength(253)
param driftServiceAccountName string = 'fraud-detection-drift'

@description('Service account of the in-cluster rollout step.')
@minLength(1)
@maxLength(253)
param rolloutServiceAccountName string = 'fraud-detection-rollout'

@description('Namespace where Kubeflow Pipelines runs pipeline pods.')
@minLength(1)
@maxLength(63)
param pipelineNamespace string = 'kubeflow'

@description('Service account of the pipeline pods.')
@minLength(1)
@maxLength(253)
param pipelineServiceAccountName string = 'fraud-pipeline-runner'

@description('GitHub repository (owner/name) trusted through OIDC by the CI identity; empty: no CI identity.')
@maxLength(140)
param githubRepository string = ''

@description('GitHub environments of that repository the CI identity trusts (retrain, deploy, the image copy to ACR).')
param githubEnvironments array = [
  'training'
  'production'
  'images'
]

var suffix = uniqueString(subscription().id, baseName, environmentName)
var allTags = union(tags, {
  workload: 'fraud-detection'
  environment: environmentName
})
var primaryName = '${baseName}-${environmentName}-${location}'
var storageAccountName = take(toLower('st${baseName}${environmentName}${suffix}'), 24)
var keyVaultName = take(toLower('kv${baseName}${environmentName}${suffix}'), 24)
var registryName = take(toLower('acr${baseName}${environmentName}${suffix}'), 50)
var redisName = take(toLower('redis-${baseName}-${environmentName}-${suffix}'), 63)
var isPremiumRegistry = acrSku == 'Premium'

resource primaryGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${primaryName}'
  location: location
  tags: allTags
}

module network 'modules/network.bicep' = {
  name: 'network-primary'
  scope: primaryGroup
  params: {
    name: 'vnet-${primaryName}'
    location: location
    tags: allTags
    addressPrefix: vnetAddressPrefix
    apimInboundSourceTag: 'Internet'
  }
}

module privateDns 'modules/private-dns.bicep' = {
  name: 'private-dns'
  scope: primaryGroup
  params: {
    tags: allTags
    vnetIds: [
      network.outputs.vnetId
    ]
  }
}

module logAnalytics 'modules/log-analytics.bicep' = {
  name: 'log-analytics'
  scope: primaryGroup
  params: {
    name: 'log-${primaryName}'
    location: location
    tags: allTags
    retentionInDays: logRetentionDays
    dailyQuotaGb: logDailyQuotaGb
  }
}

module prometheus 'modules/prometheus.bicep' = {
  name: 'prometheus'
  scope: primaryGroup
  params: {
    name: 'amw-${baseName}-${environmentName}'
    location: location
    tags: allTags
  }
}

// The same rule file the chart embeds in its PrometheusRule (managed Prometheus reads rule groups instead).
module prometheusRules 'modules/prometheus-rules.bicep' = {
  name: 'prometheus-rules'
  scope: primaryGroup
  params: {
    namePrefix: 'prom-${baseName}-${environmentName}'
    location: location
    tags: allTags
    monitorWorkspaceId: prometheus.outputs.id
    ruleGroups: loadYamlContent('../monitoring/alerts/fraud-detection.rules.yaml', '$.groups')
  }
}

module grafana 'modules/grafana.bicep' = {
  name: 'grafana'
  scope: primaryGroup
  params: {
    name: take('gf-${baseName}-${environmentName}-${suffix}', 23)
    location: location
    tags: allTags
    skuName: grafanaSku
    monitorWorkspaceId: prometheus.outputs.id
    adminPrincipalIds: adminGroupObjectIds
    adminPrincipalType: 'Group'
    zoneRedundancy: empty(availabilityZones) ? 'Disabled' : 'Enabled'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: primaryGroup
  params: {
    name: storageAccountName
    location: location
    tags: allTags
    redundancy: storageSku
    softDeleteRetentionDays: blobSoftDeleteDays
    containerNames: [
      'models'
      'payload-logs'
    ]
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneId: privateDns.outputs.blobZoneId
    logAnalyticsWorkspaceId: logAnalytics.outputs.id
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: primaryGroup
  params: {
    name: keyVaultName
    location: location
    tags: allTags
    softDeleteRetentionDays: keyVaultSoftDeleteDays
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneId: privateDns.outputs.vaultZoneId
    logAnalyticsWorkspaceId: logAnalytics.outputs.id
  }
}

module aks 'modules/aks.bicep' = {
  name: 'aks-primary'
  scope: primaryGroup
  params: {
    name: 'aks-${primaryName}'
    location: location
    tags: allTags
    kubernetesVersion: kubernetesVersion
    skuTier: aksSkuTier
    nodeSubnetId: network.outputs.nodeSubnetId
    availabilityZones: availabilityZones
    authorizedIpRanges: apiServerAuthorizedIpRanges
    adminGroupObjectIds: adminGroupObjectIds
    systemPoolVmSize: systemPoolVmSize
    systemPoolMinCount: systemPoolMinCount
    systemPoolMaxCount: systemPoolMaxCount
    osDiskSizeGb: osDiskSizeGb
    enableServingPool: enableServingPool
    servingPoolVmSize: servingPoolVmSize
    servingPoolMinCount: servingPoolMinCount
    servingPoolMaxCount: servingPoolMaxCount
    enableTrainingPool: true
    trainingPoolVmSize: trainingPoolVmSize
    trainingPoolMaxCount: trainingPoolMaxCount
    logAnalyticsWorkspaceId: logAnalytics.outputs.id
    containerInsightsRuleId: logAnalytics.outputs.containerInsightsRuleId
    prometheusRuleId: prometheus.outputs.collectionRuleId
    prometheusEndpointId: prometheus.outputs.collectionEndpointId
  }
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: primaryGroup
  params: {
    namePrefix: 'id-${baseName}-${environmentName}'
    location: location
    tags: allTags
    oidcIssuerUrls: [
      aks.outputs.oidcIssuerUrl
    ]
    appNamespace: appNamespace
    servingServiceAccountName: servingServiceAccountName
    driftServiceAccountName: driftServiceAccountName
    rolloutServiceAccountName: rolloutServiceAccountName
    monitorWorkspaceName: prometheus.outputs.name
    pipelineNamespace: pipelineNamespace
    pipelineServiceAccountName: pipelineServiceAccountName
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    githubRepository: githubRepository
    githubEnvironments: githubEnvironments
    aksClusterName: aks.outputs.name
  }
}

// Online feature store of raw-transaction scoring; the chart's onlineStore.url points at it (values-aks.yaml) and
// its access key lives in Key Vault only.
module redis 'modules/redis.bicep' = {
  name: 'redis'
  scope: primaryGroup
  params: {
    name: redisName
    location: location
    tags: allTags
    skuName: redisSkuName
    capacity: redisCapacity
    zones: redisSkuName == 'Premium' ? availabilityZones : []
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneId: privateDns.outputs.redisZoneId
    keyVaultName: keyVault.outputs.name
    keyReaderPrincipalIds: empty(githubRepository) ? [] : [identity.outputs.ciPrincipalId]
    logAnalyticsWorkspaceId: logAnalytics.outputs.id
  }
}

module acr 'modules/acr.bicep' = {
  name: 'acr'
  scope: primaryGroup
  params: {
    name: registryName
    location: location
    tags: allTags
    registrySku: acrSku
    registryPublicNetworkAccess: acrPublicNetworkAccess
    pullPrincipalIds: [
      aks.outputs.kubeletObjectId
    ]
    pushPrincipalIds: empty(githubRepository) ? [] : [identity.outputs.ciPrincipalId]
    privateEndpointSubnetId: isPremiumRegistry ? network.outputs.privateEndpointSubnetId : ''
    privateDnsZoneId: privateDns.outputs.registryZoneId
  }
}

module apim 'modules/apim.bicep' = {
  name: 'apim-primary'
  scope: primaryGroup
  params: {
    name: 'apim-${primaryName}-${take(suffix, 6)}'
    location: location
    tags: allTags
    skuName: apimSku
    capacity: apimCapacity
    availabilityZones: apimSku == 'Premium' ? availabilityZones : []
    publisherEmail: apimPublisherEmail
    publisherName: apimPublisherName
    subnetId: network.outputs.apimSubnetId
    backendUrl: inferenceBackendUrl
    backendHostName: inferenceHostName
    modelName: modelName
    rateLimitCalls: apimRateLimitCalls
    rateLimitPeriodSeconds: apimRateLimitPeriodSeconds
    jwtAudience: apimJwtAudience
    logAnalyticsWorkspaceId: logAnalytics.outputs.id
  }
}

// Application Insights: OpenTelemetry traces of the model server and the drift job (off in the chart unless
// appInsights.enabled). The connection string goes to Key Vault only; serving and drift may read that one secret.
module appInsights 'modules/appinsights.bicep' = {
  name: 'appinsights'
  scope: primaryGroup
  params: {
    name: 'appi-${primaryName}'
    location: location
    tags: allTags
    logAnalyticsWorkspaceId: logAnalytics.outputs.id
    retentionInDays: logRetentionDays
    keyVaultName: keyVault.outputs.name
    secretReaderPrincipalIds: [
      identity.outputs.servingPrincipalId
      identity.outputs.driftPrincipalId
    ]
  }
}

@description('Resource group of the deployment.')
output resourceGroupName string = primaryGroup.name

@description('Name of the AKS cluster (az aks get-credentials --name).')
output aksClusterName string = aks.outputs.name

@description('OIDC issuer of the cluster.')
output aksOidcIssuerUrl string = aks.outputs.oidcIssuerUrl

@description('Registry login server for image references in values-aks.yaml.')
output acrLoginServer string = acr.outputs.loginServer

@description('Storage account holding the models and payload-logs containers.')
output storageAccountName string = storage.outputs.name

@description('Blob endpoint of the storage account.')
output storageBlobEndpoint string = storage.outputs.blobEndpoint

@description('Key Vault URI (for the Secrets Store CSI driver SecretProviderClass).')
output vaultUri string = keyVault.outputs.uri

@description('Entra ID tenant of the vault (the SecretProviderClass tenantId).')
output tenantId string = tenant().tenantId

@description('Key Vault entry (name only) holding the Application Insights connection string.')
output appInsightsVaultEntry string = appInsights.outputs.vaultEntryName

@description('Host name of the Azure Cache for Redis (values-aks.yaml onlineStore.url: rediss://<host>:6380/0).')
output redisHostName string = redis.outputs.hostName

@description('Client ID for the serving service account annotation azure.workload.identity/client-id.')
output servingClientId string = identity.outputs.servingClientId

@description('Client ID for the drift service account annotation.')
output driftClientId string = identity.outputs.driftClientId

@description('Client ID for the pipeline service account annotation.')
output pipelineClientId string = identity.outputs.pipelineClientId

@description('Client ID for the rollout service account annotation.')
output rolloutClientId string = identity.outputs.rolloutClientId

@description('Client ID of the CI identity (GitHub variable AZURE_CLIENT_ID of deploy, images, retrain-and-deploy); empty without one.')
output ciClientId string = identity.outputs.ciClientId

@description('Managed Prometheus query endpoint (rollout analysis, Grafana).')
output prometheusQueryEndpoint string = prometheus.outputs.queryEndpoint

@description('Grafana URL.')
output grafanaEndpoint string = grafana.outputs.endpoint

@description('API Management gateway URL (the public scoring endpoint).')
output apimGatewayUrl string = apim.outputs.gatewayUrl

@description('Public scoring host: the API Management gateway.')
output scoringHostName string = apim.outputs.gatewayHostName
