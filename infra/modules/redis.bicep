// Azure Cache for Redis: the online feature store of raw-transaction scoring (docs/FEATURES.md). TLS only (the
// non-TLS port is off, TLS 1.2 minimum), no public network access (a private endpoint into the VNet), Redis 6,
// noeviction so feature state is never dropped silently. Its access key goes straight into Key Vault as a
// secret (the chart's password Secret is made from it, docs/AZURE.md); no output carries it.

@description('Cache name: 1-63 letters, digits and hyphens, globally unique (<name>.redis.cache.windows.net).')
@minLength(1)
@maxLength(63)
param name string

@description('Azure region of the cache.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Tier: Standard (primary and replica, SLA) or Premium (zones, persistence, VNet features).')
@allowed([
  'Standard'
  'Premium'
])
param skuName string = 'Standard'

@description('Size within the tier: C1 (1 GB) by default for Standard; Premium uses P sizes of the same number.')
@minValue(0)
@maxValue(6)
param capacity int = 1

@description('Availability zones of a Premium cache (empty for Standard or regions without zones).')
param zones array = []

@description('Redis eviction policy. noeviction: writes fail rather than evict feature state when the cache is full.')
@allowed([
  'noeviction'
  'volatile-lru'
  'allkeys-lru'
])
param maxmemoryPolicy string = 'noeviction'

@description('Public network access. Disabled: reachable only through the private endpoint.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Disabled'

@description('Subnet for the cache private endpoint (empty: no private endpoint).')
param privateEndpointSubnetId string = ''

@description('Private DNS zone (privatelink.redis.cache.windows.net) for the private endpoint.')
param privateDnsZoneId string = ''

@description('Name of the Key Vault (same resource group) that receives the access key.')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Name of the Key Vault secret holding the primary access key.')
@minLength(1)
@maxLength(127)
param keySecretName string = 'redis-access-key'

@description('Expiry of the Key Vault secret (ISO 8601); every deployment writes the current key with a new expiry.')
param keySecretExpiry string = dateTimeAdd(utcNow(), 'P1Y')

@description('Principal IDs allowed to read the access key secret (Key Vault Secrets User on that secret only), e.g. the deploy identity.')
param keyReaderPrincipalIds array = []

@description('Log Analytics workspace receiving the cache logs and metrics (empty: none).')
param logAnalyticsWorkspaceId string = ''

var keyVaultSecretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource cache 'Microsoft.Cache/redis@2024-03-01' = {
  name: name
  location: location
  tags: tags
  zones: skuName == 'Premium' && !empty(zones) ? zones : null
  properties: {
    sku: {
      name: skuName
      family: skuName == 'Premium' ? 'P' : 'C'
      capacity: capacity
    }
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    publicNetworkAccess: publicNetworkAccess
    redisVersion: '6'
    disableAccessKeyAuthentication: false
    redisConfiguration: {
      'maxmemory-policy': maxmemoryPolicy
    }
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// The key is read here and written to the vault in the same deployment; it never appears in an output.
resource keySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: keySecretName
  tags: tags
  properties: {
    value: cache.listKeys().primaryKey
    contentType: 'Azure Cache for Redis access key (FRAUD_ONLINE_STORE_PASSWORD)'
    attributes: {
      enabled: true
      exp: dateTimeToEpoch(keySecretExpiry)
    }
  }
}

resource keyReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principalId in keyReaderPrincipalIds: {
    name: guid(keySecret.id, principalId, keyVaultSecretsUser)
    scope: keySecret
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: keyVaultSecretsUser
    }
  }
]

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'to-log-analytics'
  scope: cache
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

resource privateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (!empty(privateEndpointSubnetId)) {
  name: 'pe-${name}-redis'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'redisCache'
        properties: {
          privateLinkServiceId: cache.id
          groupIds: [
            'redisCache'
          ]
        }
      }
    ]
  }
}

resource privateDnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = if (!empty(privateEndpointSubnetId) && !empty(privateDnsZoneId)) {
  parent: privateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'redisCache'
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}

@description('Resource ID of the cache.')
output id string = cache.id

@description('Name of the cache.')
output name string = cache.name

@description('Host name of the cache (onlineStore.url: rediss://<hostName>:<sslPort>/0).')
output hostName string = cache.properties.hostName

@description('TLS port of the cache (6380).')
output sslPort int = cache.properties.sslPort
