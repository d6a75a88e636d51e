// Prod: one region, zone-redundant (AKS pools, ACR, API Management across three zones), SLA tiers, RA-GZRS storage
// (readable in the paired region, the basis of docs/RUNBOOK.md's disaster recovery), private Premium ACR, Premium
// API Management and a dedicated serving pool sized for the InferenceService's 2-10 replicas.
// Environment variables read at build time:
//   AKS_AUTHORIZED_IP_RANGES  comma-separated CIDRs allowed to reach the API server (required)
//   APIM_PUBLISHER_EMAIL      publisher email of API Management (required)
//   AKS_ADMIN_GROUP_ID        Entra ID group that administers the clusters and Grafana (required)
//   INFERENCE_BACKEND_URL     internal ingress URL of the InferenceService (optional until the chart is installed)
//   INFERENCE_HOST_NAME       Host header of the InferenceService (optional)
//   GITHUB_REPOSITORY         owner/name trusted by the CI identity (set by GitHub Actions)
using '../main.bicep'

param baseName = 'fraud'
param environmentName = 'prod'
param location = 'westeurope'
param tags = {
  costCenter: 'fraud-platform'
  criticality: 'high'
}

param aksSkuTier = 'Standard'
param availabilityZones = [
  '1'
  '2'
  '3'
]
param apiServerAuthorizedIpRanges = split(readEnvironmentVariable('AKS_AUTHORIZED_IP_RANGES'), ',')
param adminGroupObjectIds = [
  readEnvironmentVariable('AKS_ADMIN_GROUP_ID')
]

// Standard_D4ds_v5: 4 vCPU, 16 GiB, 150 GiB temp disk (holds the 128 GiB ephemeral OS disk).
param systemPoolVmSize = 'Standard_D4ds_v5'
param systemPoolMinCount = 2
param systemPoolMaxCount = 5
param osDiskSizeGb = 128
param enableServingPool = true
param servingPoolVmSize = 'Standard_D4ds_v5'
param servingPoolMinCount = 2
param servingPoolMaxCount = 10
// Standard_D8ds_v5: 8 vCPU, 32 GiB, 300 GiB temp disk; spot, scales to zero between weekly runs.
param trainingPoolVmSize = 'Standard_D8ds_v5'
param trainingPoolMaxCount = 4

param acrSku = 'Premium'
param acrPublicNetworkAccess = 'Disabled'
param storageSku = 'Standard_RAGZRS'
param blobSoftDeleteDays = 30
param keyVaultSoftDeleteDays = 90
// Azure Cache for Redis (online feature store): Standard C1 (1 GB, primary + replica); Premium (P1+) adds zone
// redundancy and persistence when the state outgrows it.
param redisSkuName = 'Standard'
param redisCapacity = 1
param logRetentionDays = 90
param logDailyQuotaGb = -1
param grafanaSku = 'Standard'

param apimSku = 'Premium'
param apimCapacity = 1
param apimPublisherEmail = readEnvironmentVariable('APIM_PUBLISHER_EMAIL')
param apimPublisherName = 'Fraud platform'
param apimRateLimitCalls = 600
param apimRateLimitPeriodSeconds = 60
param inferenceBackendUrl = readEnvironmentVariable('INFERENCE_BACKEND_URL', '')
param inferenceHostName = readEnvironmentVariable('INFERENCE_HOST_NAME', '')

param githubRepository = readEnvironmentVariable('GITHUB_REPOSITORY', '')
