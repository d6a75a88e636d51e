// Private DNS zones for the private endpoints (blob, Key Vault, ACR, Azure Cache for Redis), linked to every VNet of the deployment.

@description('Resource IDs of the virtual networks that resolve the private endpoints.')
@minLength(1)
param vnetIds array

@description('Tags applied to every resource.')
param tags object = {}

var zoneNames = {
  blob: 'privatelink.blob.${environment().suffixes.storage}'
  vault: 'privatelink.vaultcore.azure.net'
  registry: 'privatelink.azurecr.io'
  redis: 'privatelink.redis.cache.windows.net'
}

resource blobZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: zoneNames.blob
  location: 'global'
  tags: tags
}

resource vaultZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: zoneNames.vault
  location: 'global'
  tags: tags
}

resource registryZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: zoneNames.registry
  location: 'global'
  tags: tags
}

resource redisZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: zoneNames.redis
  location: 'global'
  tags: tags
}

resource blobLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (vnetId, i) in vnetIds: {
    parent: blobZone
    name: 'link-${i}-${last(split(vnetId, '/'))}'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnetId
      }
    }
  }
]

resource vaultLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (vnetId, i) in vnetIds: {
    parent: vaultZone
    name: 'link-${i}-${last(split(vnetId, '/'))}'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnetId
      }
    }
  }
]

resource registryLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (vnetId, i) in vnetIds: {
    parent: registryZone
    name: 'link-${i}-${last(split(vnetId, '/'))}'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnetId
      }
    }
  }
]

resource redisLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (vnetId, i) in vnetIds: {
    parent: redisZone
    name: 'link-${i}-${last(split(vnetId, '/'))}'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnetId
      }
    }
  }
]

@description('Resource ID of the privatelink blob zone.')
output blobZoneId string = blobZone.id

@description('Resource ID of the privatelink vault zone.')
output vaultZoneId string = vaultZone.id

@description('Resource ID of the privatelink container registry zone.')
output registryZoneId string = registryZone.id

@description('Resource ID of the privatelink Azure Cache for Redis zone.')
output redisZoneId string = redisZone.id
