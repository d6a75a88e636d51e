// Container registry for the pipeline, serve and drift images. No admin user, no anonymous pull. AcrPull is
// granted to the AKS kubelet identities only (pods never pull with their own identity). Premium adds a private
// endpoint, disabled public access, zone redundancy and untagged-manifest retention; dev uses Basic to save cost.

@description('Registry name: 5-50 letters and digits, globally unique.')
@minLength(5)
@maxLength(50)
param name string

@description('Azure region of the registry.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Registry SKU. Premium is required for private endpoints, network rules and zone redundancy.')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param registrySku string = 'Premium'

@description('Public network access; Disabled needs the Premium SKU (Basic and Standard must use Enabled).')
@allowed([
  'Enabled'
  'Disabled'
])
param registryPublicNetworkAccess string = 'Disabled'

@description('Object IDs of the AKS kubelet identities that get AcrPull.')
param pullPrincipalIds array = []

@description('Object IDs of principals (for example the CI identity that builds images) that get AcrPush.')
param pushPrincipalIds array = []

@description('Subnet for the registry private endpoint (Premium only; empty: none).')
param privateEndpointSubnetId string = ''

@description('Private DNS zone (privatelink.azurecr.io) for the private endpoint.')
param privateDnsZoneId string = ''

@description('Days untagged manifests are kept (Premium only).')
@minValue(0)
@maxValue(365)
param untaggedRetentionDays int = 30

var isPremium = registrySku == 'Premium'
var premiumNetworkRuleSet = {
  defaultAction: 'Deny'
  ipRules: []
}
var premiumPolicies = {
  retentionPolicy: {
    status: 'enabled'
    days: untaggedRetentionDays
  }
  exportPolicy: {
    status: registryPublicNetworkAccess == 'Disabled' ? 'disabled' : 'enabled'
  }
}
var acrPullRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')
var acrPushRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '8311e382-0749-4cb8-b61a-304f252e45ec')

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_166: quarantine needs an external scanner to release each image; without one every push would be unpullable. Images are scanned by Microsoft Defender for Containers instead.
  name: name
  location: location
  tags: tags
  sku: {
    name: registrySku
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    dataEndpointEnabled: false
    publicNetworkAccess: registryPublicNetworkAccess
    networkRuleBypassOptions: 'AzureServices'
    networkRuleSet: isPremium ? premiumNetworkRuleSet : null
    zoneRedundancy: isPremium ? 'Enabled' : 'Disabled'
    policies: isPremium ? premiumPolicies : {}
  }
}

resource pullAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principalId in pullPrincipalIds: {
    name: guid(registry.id, principalId, acrPullRoleId)
    scope: registry
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: acrPullRoleId
    }
  }
]

resource pushAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principalId in pushPrincipalIds: {
    name: guid(registry.id, principalId, acrPushRoleId)
    scope: registry
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: acrPushRoleId
    }
  }
]

resource privateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (isPremium && !empty(privateEndpointSubnetId)) {
  name: 'pe-${name}-registry'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'registry'
        properties: {
          privateLinkServiceId: registry.id
          groupIds: [
            'registry'
          ]
        }
      }
    ]
  }
}

resource privateDnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = if (isPremium && !empty(privateEndpointSubnetId) && !empty(privateDnsZoneId)) {
  parent: privateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'registry'
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}

@description('Resource ID of the registry.')
output id string = registry.id

@description('Name of the registry.')
output name string = registry.name

@description('Login server (<name>.azurecr.io) for image references.')
output loginServer string = registry.properties.loginServer
