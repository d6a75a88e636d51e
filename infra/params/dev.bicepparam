// Dev: the smallest sizes that still run the whole platform. No SLA tiers, no zones, LRS storage, Basic ACR
// (public, since Basic has no private endpoint), Developer API Management, one region.
// Environment variables read at build time:
//   AKS_AUTHORIZED_IP_RANGES  comma-separated CIDRs allowed to reach the API server (required)
//   APIM_PUBLISHER_EMAIL      publisher email of API Management (optional)
//   GITHUB_REPOSITORY         owner/name trusted by the CI identity (set by GitHub Actions; optional locally)
using '../main.bicep'

param baseName = 'fraud'
param environmentName = 'dev'
param location = 'westeurope'
param tags = {
  costCenter: 'fraud-platform-dev'
}

param aksSkuTier = 'Free'
param availabilityZones = []
param apiServerAuthorizedIpRanges = split(readEnvironmentVariable('AKS_AUTHORIZED_IP_RANGES'), ',')

// Standard_D2ds_v5: 2 vCPU, 8 GiB, 75 GiB temp disk (holds the 64 GiB ephemeral OS disk).
param systemPoolVmSize = 'Standard_D2ds_v5'
param systemPoolMinCount = 1
param systemPoolMaxCount = 3
param osDiskSizeGb = 64
param enableServingPool = false
param trainingPoolVmSize = 'Standard_D4ds_v5'
param trainingPoolMaxCount = 2

param acrSku = 'Basic'
param acrPublicNetworkAccess = 'Enabled'
param storageSku = 'Standard_LRS'
param blobSoftDeleteDays = 7
param keyVaultSoftDeleteDays = 7
// Azure Cache for Redis (online feature store): Standard C0 (250 MB, primary + replica), the smallest TLS-only
// cache with an SLA; enough for a dev history.
param redisSkuName = 'Standard'
param redisCapacity = 0
param logRetentionDays = 30
param logDailyQuotaGb = 1
param grafanaSku = 'Standard'

param apimSku = 'Developer'
param apimCapacity = 1
param apimPublisherEmail = readEnvironmentVariable('APIM_PUBLISHER_EMAIL', 'fraud-platform@example.com')
param apimPublisherName = 'Fraud platform (dev)'
param apimRateLimitCalls = 120
param apimRateLimitPeriodSeconds = 60

param githubRepository = readEnvironmentVariable('GITHUB_REPOSITORY', '')
